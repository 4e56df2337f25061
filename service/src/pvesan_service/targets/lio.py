"""lio driver: exports through the Linux kernel target (LIO) via rtslib-fb.

The shared code is ``plugins/module_utils/_lio.py`` (copied here as ``shared/_lio.py``).  LIO keeps
its state in the kernel (configfs), so it survives a service restart but not a reboot; the
reconciler re-applies exports at start-up.  Lookups go straight to the target's configfs
directory, so an export costs the same with 5 or 5,000 targets.  The volume is LUN 1, as on tgt.

Tested against a fake rtslib on every ``make test`` (service/tests/test_targets_lio.py) and against
a real kernel target with the kernel initiator in the kernel VM (test_targets_lio_kernel.py,
``make kernel-vm-lio``): this build host's kernel has no LIO.

``write_through`` (the heads of an HA pair): files get fileio storage objects with
``write_back=False`` (the kernel opens them O_DSYNC, so LIO completes a write once it and the block
allocation behind it are on the disk; write-back fileio acknowledges from the head's page cache,
which dies with the head).  Block devices need nothing: the block backstore submits to the device,
whose cache is the shared disk's own and is flushed by the guest's SYNCHRONIZE CACHE.  LIO fixes the
mode when a storage object is created, so, as with tgt, a change applies to LUNs created from then
on and to those created again (a resize, a reboot, a switchover or failover of an HA pair); live
LUNs keep theirs.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

from ..shared import _lio as liolib
from .base import ALL_INITIATORS, DATA_LUN, Chap, Export, TargetDriver, TargetError

CONFIGFS_TARGET = "/sys/kernel/config/target"


class LioDriver(TargetDriver):
    """Exports volumes through LIO (one target, TPG 1, LUN 1 per volume)."""

    kind = "lio"

    def __init__(self, portals: Optional[list[str]] = None, iqn_prefix: Optional[str] = None, configfs: str = CONFIGFS_TARGET,
                 write_through: bool = False):
        if not isinstance(write_through, bool):
            raise TargetError("lio write_through must be true or false, not %r" % (write_through,))
        self.write_through = write_through
        self.portals = list(portals or ["0.0.0.0:3260"])
        self.iqn_prefix = iqn_prefix or ""
        self.configfs = configfs
        self._lock = threading.Lock()

    def _call(self, what: str, fn, *args):
        try:
            with self._lock:
                return fn(*args)
        except liolib.LioError as exc:
            raise TargetError("%s: %s" % (what, exc)) from exc
        except Exception as exc:  # rtslib raises RTSLibError and OSError from configfs
            raise TargetError("%s failed: %s" % (what, exc)) from exc

    def _desired(self, export: Export) -> dict:
        chap = mutual = None
        if export.chap:
            chap = {"user": export.chap.user, "password": export.chap.password}
            if export.chap.mutual_user:
                mutual = {"user": export.chap.mutual_user, "password": export.chap.mutual_password}
        return {"iqn": export.iqn, "luns": [{"lun": export.lun, "path": export.backing_path, "serial": export.serial,
                                             "readonly": export.readonly, "block_size": export.block_size,
                                             "thin_provisioning": export.thin,
                                             "write_cache": not self.write_through}],  # fileio write_back
                "initiators": [i for i in export.initiators if i != ALL_INITIATORS],
                "any_initiator": ALL_INITIATORS in export.initiators, "chap": chap, "mutual_chap": mutual, "portals": self.portals}

    def export(self, export: Export) -> None:
        if export.lun != DATA_LUN:
            raise TargetError("exports use LUN %d, not %d" % (DATA_LUN, export.lun))
        self._call("export of %s" % export.iqn, liolib.apply_target, self._desired(export))

    def acl_problem(self, initiators: list[str]) -> Optional[str]:
        addresses = [i for i in initiators if i != ALL_INITIATORS and not i.startswith(("iqn.", "eui.", "naa."))]
        if addresses:
            return "the LIO target takes initiator names (iqn./eui./naa.) in ACLs, not addresses: %s" % ", ".join(addresses)
        return None

    def unexport(self, iqn: str) -> None:
        self._call("unexport of %s" % iqn, liolib.remove_target, iqn)

    def list_exports(self) -> dict[str, Export]:
        targets = self._call("reading LIO targets", liolib.read_targets)
        result = {}
        for iqn, t in targets.items():
            if not iqn.startswith(self.iqn_prefix):
                continue
            lun = next((lu for lu in t["luns"] if lu["lun"] == DATA_LUN), None)
            chap = None
            if t["chap"]:
                mutual = t["mutual_chap"] or {}
                chap = Chap(t["chap"]["user"], t["chap"]["password"], mutual.get("user"), mutual.get("password"))
            result[iqn] = Export(iqn=iqn, lun=DATA_LUN, backing_path=lun["path"] if lun else "",
                                 serial=lun["serial"] if lun else "", chap=chap,
                                 initiators=[ALL_INITIATORS] if t["allow_all"] else list(t["initiators"]),
                                 readonly=bool(lun and lun["readonly"]), thin=bool(lun and lun.get("thin_provisioning")))
        return result

    def refresh_size(self, iqn: str) -> None:
        # the storage object is created again, so in the configured mode
        self._call("size refresh of %s" % iqn, liolib.refresh_lun, iqn, DATA_LUN, not self.write_through)

    def alive(self) -> bool:
        if not os.path.isdir(self.configfs):
            return False
        try:
            liolib.rtslib()
        except liolib.LioError:
            return False
        return True
