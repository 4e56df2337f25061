"""Volume backends: file (sparse files + reflink), zfs (zvols), lvmthin (thin LVs)."""
from __future__ import annotations

from .base import BackendError, NotInPool, NotSupported, PoolCapacity, Runner, VolumeBackend
from .file import FileBackend
from .lvmthin import LvmThinBackend
from .zfs import ZfsBackend

__all__ = ["BackendError", "NotInPool", "NotSupported", "PoolCapacity", "Runner", "VolumeBackend", "make_backend"]


def make_backend(kind: str, runner: Runner | None = None, **options) -> VolumeBackend:
    """Build a backend from its kind and pool options.

    - ``file``: ``path=`` directory (XFS/btrfs with reflink for snapshots/clones), ``require_reflink=``,
      ``require_mount=`` (no file is made unless ``path`` is a mount point: a pool on its own disk)
    - ``zfs``: ``dataset=``, optional ``volblocksize=`` (e.g. ``16K``), ``compression=`` (default ``lz4``; ``inherit``: the dataset's)
    - ``lvmthin``: ``vg=``, ``thinpool=``
    """
    if kind == "file":
        return FileBackend(**options)
    if kind == "zfs":
        return ZfsBackend(runner=runner, **options)
    if kind == "lvmthin":
        return LvmThinBackend(runner=runner, **options)
    raise BackendError("unknown backend kind %r (use file, zfs or lvmthin)" % (kind,))
