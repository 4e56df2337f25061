"""iSCSI target driver interface: how volumes are exported.

The service database is the source of truth; a driver only applies and reads back target state.
Every volume is one target with one LUN.  The LUN number is **1** on every driver (tgt reserves
LUN 0 for its controller; LIO uses 1 as well so the initiator URL is the same everywhere:
``iscsi://<portal>/<iqn>/1``).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Optional

DATA_LUN = 1
ALL_INITIATORS = "ALL"  # the ACL entry that lets any initiator in (an empty ACL lets none in)


class TargetError(Exception):
    """A target operation failed; the message says what and why."""


class TargetNotRunning(TargetError):
    """The target daemon is not running: it holds no export at all (tgtd keeps nothing across a
    restart), so removing an export from it is already done."""


@dataclass
class Chap:
    """CHAP credentials: ``user``/``password`` authenticate the initiator (incoming);
    ``mutual_*`` authenticate the target to the initiator (outgoing, optional)."""

    user: str
    password: str = field(repr=False)
    mutual_user: Optional[str] = None
    mutual_password: Optional[str] = field(default=None, repr=False)


@dataclass
class Export:
    """Desired (or observed) state of one exported volume."""

    iqn: str
    lun: int
    backing_path: str
    serial: str
    chap: Optional[Chap] = None
    # initiator IQNs or IP addresses/CIDRs allowed to log in (and to discover the target);
    # ["ALL"] lets any initiator in, an empty list none
    initiators: list[str] = field(default_factory=list)
    readonly: bool = False
    block_size: int = 512
    # thin: the LUN takes UNMAP and WRITE SAME with UNMAP, which give the space back to the pool,
    # and says so (LBPME, VPD B0/B2); a thick LUN is fully provisioned
    thin: bool = False


class TargetDriver(abc.ABC):
    """One iSCSI target implementation (tgt or LIO)."""

    kind: str = ""

    # Id of the target instance last seen by ``alive()``; it changes when the target daemon
    # restarted and lost its exports (the reconciler re-applies them then).  None: cannot tell.
    generation = None

    @abc.abstractmethod
    def export(self, export: Export) -> None:
        """Create the export or update it in place (ACL, CHAP, read-only); idempotent."""

    def wwid(self, serial: str) -> Optional[str]:
        """The WWID initiators see for the LUN of an export with this serial (udev's ID_SERIAL,
        multipath's map name), or None when the driver cannot tell."""
        return None

    def can_unmap(self, backing_path: str) -> bool:
        """Can a LUN on this backing store take UNMAP (a thin export)?  Else it is exported fully
        provisioned, whatever the volume's service type says."""
        return True

    def acl_problem(self, initiators: list[str]) -> Optional[str]:
        """Why this target cannot enforce the initiator ACL ``initiators``, or None when it can
        (checked before anything is stored, so a bad entry is the caller's 4xx, not a failed export)."""
        return None

    @abc.abstractmethod
    def unexport(self, iqn: str) -> None:
        """Remove the target, ending its sessions; no error when it does not exist."""

    @abc.abstractmethod
    def list_exports(self) -> dict[str, Export]:
        """What the target really has, keyed by IQN (reconciler input)."""

    @abc.abstractmethod
    def refresh_size(self, iqn: str) -> None:
        """Make initiators see the grown size of the backing store."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """True when the target daemon/kernel target is up.  A driver that notices a restart
        drops its cached state; the reconciler then re-applies every export."""
