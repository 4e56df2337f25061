"""iSCSI target drivers: tgt (user space, tgtadm) and lio (kernel, rtslib-fb)."""
from .base import DATA_LUN, Chap, Export, TargetDriver, TargetError, make_target_driver

__all__ = ["DATA_LUN", "Chap", "Export", "TargetDriver", "TargetError", "make_target_driver"]
