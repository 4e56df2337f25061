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
      ``management=`` (``socket``, the default: requests on tgtd's management socket, or ``tgtadm``)
    - ``lio``: ``portals=`` (list of ``ip:port``, default ``0.0.0.0:3260``), ``configfs=`` (LIO's configfs
      directory); files get a fileio backstore, block devices a block one
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
