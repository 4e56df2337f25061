"""The domain layer: one module per aggregate, wired together by ``Service`` (domain/service.py)."""
from .auth import Principal
from .service import Service

__all__ = ["Principal", "Service"]
