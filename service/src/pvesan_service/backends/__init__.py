"""Volume backends: file (sparse files + reflink), zfs (zvols), lvmthin (thin LVs)."""
from .base import BackendError, NotFound, NotSupported, PoolCapacity, Runner, VolumeBackend, make_backend

__all__ = ["BackendError", "NotFound", "NotSupported", "PoolCapacity", "Runner", "VolumeBackend", "make_backend"]
