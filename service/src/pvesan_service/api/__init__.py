"""The API layer: a FastAPI app, JSON over HTTPS with bearer tokens (spec at /openapi.json).

Routes (routes/, one module per resource) are thin: FastAPI validates the request against
schemas.py, deps.py gives the caller and the tenant a call acts on, the domain does the work, and
the answer is checked against the route's response model.  Errors: errors.py.  Bounds on slow
or greedy clients: guard.py (used by the server, not by the app).
"""
from __future__ import annotations

from fastapi import Depends, FastAPI

from .. import __version__
from ..domain import Service
from . import errors
from .deps import known_query
from .routes import pools, status, tenants, volumes
from .schemas import ERRORS


def create_app(service: Service, *, metrics_public: bool = False) -> FastAPI:
    app = FastAPI(title="pvesan volume service", version=__version__,
                  description="Thin volumes, snapshots and clones exported over iSCSI (one target per volume, LUN 1).",
                  responses=ERRORS, generate_unique_id_function=lambda route: route.name,
                  dependencies=[Depends(known_query)])
    app.state.service = service
    app.state.metrics_public = metrics_public
    errors.install(app)
    for module in (status, tenants, pools, volumes):
        app.include_router(module.router)
    return app
