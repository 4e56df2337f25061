"""iSCSI target drivers: tgt (user space, tgtd's management socket or tgtadm) and lio (kernel, rtslib-fb)."""
from __future__ import annotations

import inspect

from .base import DATA_LUN, Chap, Export, TargetDriver, TargetError
from .lio import LioDriver
from .tgt import TgtDriver

__all__ = ["DATA_LUN", "Chap", "Export", "TargetDriver", "TargetError", "make_target_driver"]


def make_target_driver(kind: str, **options) -> TargetDriver:
    """Build a driver from its kind and options.

    - ``tgt``: ``control_port=`` (tgtadm ``-C``, default 0), ``bstype=`` (``rdwr`` default, or ``aio``),
      ``bsoflags=`` (e.g. ``direct``), ``portals=`` (list of ``ip:port`` to report; informational),
      ``management=`` (``socket``, the default: requests on tgtd's management socket, or ``tgtadm``),
      ``write_through=`` (bool, default False: LUNs get the backing-store flag ``sync``, O_SYNC, so every
      acknowledged write is on the disk; needs ``bstype`` ``rdwr``)
    - ``lio``: ``portals=`` (list of ``ip:port``, default ``0.0.0.0:3260``), ``configfs=`` (LIO's configfs
      directory), ``write_through=`` (bool, default False: fileio storage objects with ``write_back=False``);
      files get a fileio backstore, block devices a block one

    ``write_through`` is for the heads of an HA pair (a dead head must not take acknowledged writes with
    it).  Both targets fix it when a LUN is created: a change applies to LUNs created from then on and
    to those created again (resize, target restart, HA switchover or failover), not to live ones.
    """
    if kind == "tgt":
        driver = TgtDriver
    elif kind == "lio":
        driver = LioDriver
    else:
        raise TargetError("unknown target driver %r (use tgt or lio)" % (kind,))
    known = sorted(set(inspect.signature(driver.__init__).parameters) - {"self", "run"})
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TargetError("unknown option(s) %s for target driver %s (known: %s)" % (", ".join(unknown), kind, ", ".join(known)))
    return driver(**options)
