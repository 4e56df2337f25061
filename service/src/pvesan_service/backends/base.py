"""Volume backend interface: where the bytes of a volume live.

A backend manages the volumes of one pool (a directory of sparse files, a ZFS dataset holding
zvols, or an LVM thin pool).  Volume names are backend ids chosen by the service core (``v-<hex>``,
``[a-z0-9-]`` only); the user-visible name never reaches a backend, so renames never touch it.

Errors meant for the API user are ``BackendError`` (the API maps them to 4xx/409 with the
message); ``NotSupported`` is a ``BackendError`` for operations the pool cannot do, e.g. reflink
snapshots on a filesystem without reflink.
"""
from __future__ import annotations

import abc
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Sequence

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class BackendError(Exception):
    """User-facing message; the API maps it to a 4xx/409 with the reason."""


class NotSupported(BackendError):
    """The pool cannot do this, e.g. reflink snapshots on a filesystem without reflink."""


class NotInPool(BackendError):
    """The volume or snapshot does not exist in the pool."""


@dataclass
class PoolCapacity:
    """Real bytes of a pool (statvfs / zfs get / lvs), never invented."""

    total: int
    used: int
    available: int


@dataclass
class CommandResult:
    """Result of one external command."""

    rc: int
    stdout: str
    stderr: str


class Runner:
    """Runs the external commands of a backend or target driver (zfs, lvm, tgtadm).

    Everything external goes through ``run`` so tests can replace it with a replaying fake
    fed with recorded real output.
    """

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout

    def run(self, argv: Sequence[str], check: bool = True) -> CommandResult:
        """Run ``argv`` (no shell); raise BackendError with the tool's message when ``check``
        is set and the command fails."""
        try:
            # the C locale: the output is parsed, and translated messages would not match
            proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=self.timeout, check=False,
                                  env=dict(os.environ, LC_ALL="C"))
        except FileNotFoundError as exc:
            raise BackendError("command not found: %s (install it on the storage host)" % argv[0]) from exc
        except subprocess.TimeoutExpired as exc:
            raise BackendError("command timed out after %ss: %s" % (self.timeout, " ".join(argv))) from exc
        res = CommandResult(proc.returncode, proc.stdout, proc.stderr)
        if check and res.rc != 0:
            raise BackendError("%s failed (rc=%d): %s" % (" ".join(argv), res.rc, (res.stderr or res.stdout).strip()))
        return res


def check_name(name: str, what: str = "volume") -> str:
    """Validate a backend volume/snapshot id (defence in depth: the core already generates them)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BackendError("invalid %s id %r: use 1-63 characters [a-z0-9-], starting with a letter or digit" % (what, name))
    return name


class VolumeBackend(abc.ABC):
    """One pool of volumes.  Every method is safe to call from several threads for different
    volumes; the core serialises operations on the same volume."""

    kind: str = ""

    @abc.abstractmethod
    def check(self) -> None:
        """Validate that the pool exists and is usable (raises BackendError / NotSupported)."""

    @abc.abstractmethod
    def capacity(self) -> PoolCapacity:
        """Real total/used/available bytes of the pool; cheap (GET /status every 10 s per node)."""

    @abc.abstractmethod
    def create(self, name: str, size: int, thin: bool = True) -> str:
        """Create volume ``name`` of ``size`` bytes and return its backing path.

        Idempotent when a volume of the same name and size already exists."""

    def flush(self, name: str) -> None:
        """Make a just created volume durable.  The core calls it before it commits the volume as
        ready, while the target exports it, so a slow flush does not add to a create's latency.
        Default: nothing to do (ZFS and LVM commands return once their change is on disk)."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Delete the volume and its snapshots; no error when it does not exist."""

    @abc.abstractmethod
    def resize(self, name: str, size: int) -> None:
        """Grow the volume to ``size`` bytes (same size: no-op; smaller: BackendError)."""

    @abc.abstractmethod
    def path(self, name: str) -> str:
        """Backing path handed to the iSCSI target (file or block device)."""

    @abc.abstractmethod
    def exists(self, name: str) -> bool:
        """True when the volume exists in the pool."""

    @abc.abstractmethod
    def size(self, name: str) -> int:
        """Provisioned size of the volume in bytes."""

    @abc.abstractmethod
    def list_volumes(self) -> list[str]:
        """Names of the volumes present in the pool (reconciler input)."""

    @abc.abstractmethod
    def allocated_bytes(self, name: str) -> int:
        """Bytes really allocated by the volume (less than its size when thin)."""

    def allocated_map(self, names) -> dict[str, int]:
        """``allocated_bytes`` of many volumes at once (volumes missing from the pool left out);
        backends that can ask their tool once for all do so."""
        out = {}
        for name in names:
            try:
                out[name] = self.allocated_bytes(name)
            except NotInPool:
                pass
        return out

    def reclaim(self, name: str) -> int:
        """Free the all-zero ranges of a volume while initiators keep writing to it; returns the
        bytes freed.  Only where the kernel can check "still all zeros" and free the range in one
        step (see file.py); elsewhere a check-then-discard could lose a write made in between."""
        raise NotSupported("the %s backend cannot free all-zero ranges safely while the volume is in use; "
                           "discard from the guest instead (fstrim, with discard=on on the Proxmox disk)" % self.kind)

    @abc.abstractmethod
    def snapshot_create(self, name: str, snap: str) -> None:
        """Take snapshot ``snap`` of volume ``name`` (instant and thin where possible)."""

    @abc.abstractmethod
    def snapshot_delete(self, name: str, snap: str) -> None:
        """Delete a snapshot; no error when it does not exist."""

    @abc.abstractmethod
    def snapshot_rollback(self, name: str, snap: str) -> None:
        """Make the volume's content equal to the snapshot again (the snapshot is kept)."""

    @abc.abstractmethod
    def list_snapshots(self, name: str) -> list[str]:
        """Snapshot names of a volume."""

    @abc.abstractmethod
    def clone(self, src: str, snap: str, new_name: str) -> str:
        """Create volume ``new_name`` from snapshot ``snap`` of ``src``; return its backing path."""
