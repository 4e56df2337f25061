"""Exports: what the iSCSI target serves for each volume, derived from its row.

One target per volume, LUN 1, named by its stored IQN; the LUN's serial is the volume id's hex.
The target driver (tgt or LIO) keeps per-daemon state, so every call goes through one lock.
"""
from __future__ import annotations

import threading
from typing import Optional

from .. import db
from ..errors import Invalid
from ..targets.base import ALL_INITIATORS, DATA_LUN, Chap, Export, TargetDriver, TargetNotRunning
from . import chap as chaps
from .secretbox import SecretBox


class Exports:
    def __init__(self, target: TargetDriver, box: SecretBox, iqn_prefix: str, portals: list[str]):
        self.target = target
        self.box = box
        self.iqn_prefix = iqn_prefix
        self.portals = list(portals)
        self.lock = threading.Lock()
        self.up = True  # as last seen by the reconciler's watch

    def iqn(self, vid: str) -> str:
        # the volume id makes it unique and says nothing about the tenant (discovery shows IQNs);
        # stored with the volume: IQNs of older releases (prefix:tenant.id) never change
        return "%s:%s" % (self.iqn_prefix, vid)

    def acl(self, initiators: list) -> list:
        """An initiator ACL as stored: without duplicates, just ["ALL"] when it lets anyone in, and
        refused (422) when the target driver could not enforce it."""
        acl = [ALL_INITIATORS] if ALL_INITIATORS in initiators else list(dict.fromkeys(initiators))
        problem = self.target.acl_problem(acl)
        if problem:
            raise Invalid(problem)
        return acl

    def chap_of(self, vol: dict) -> Optional[Chap]:
        return chaps.opened(self.box, vol["chap_user"], vol["chap_secret"], vol["chap_mutual_user"], vol["chap_mutual_secret"])

    @staticmethod
    def initiators_of(vol: dict) -> list[str]:
        own = db.from_json(vol["initiators"])
        return own if own is not None else db.from_json(vol["tenant_initiators"], [])

    def export_of(self, vol: dict) -> Export:
        return Export(iqn=vol["iqn"], lun=DATA_LUN, backing_path=vol["backing_path"], serial=vol["id"][2:],
                      chap=self.chap_of(vol), initiators=self.initiators_of(vol), readonly=False,
                      block_size=vol["block_size"], thin=self.thin_of(vol))

    def thin_of(self, vol: dict) -> bool:
        """Is the volume exported thin (UNMAP): a thin volume, where the target can."""
        return bool(vol["thin"]) and self.target.can_unmap(vol["backing_path"])

    def view(self, vol: dict) -> dict:
        """The ``export`` object of a volume in the API."""
        iqn = vol["iqn"]
        return {"iqn": iqn, "lun": DATA_LUN, "portals": self.portals,
                "urls": ["iscsi://%s/%s/%d" % (portal, iqn, DATA_LUN) for portal in self.portals],
                "initiators": self.initiators_of(vol), "wwid": self.target.wwid(vol["id"][2:]),
                "unmap": self.thin_of(vol), "chap": chaps.out(self.chap_of(vol))}

    # -- the target ---------------------------------------------------------------------------
    def export(self, vol: dict) -> None:
        exp = self.export_of(vol)
        with self.lock:
            self.target.export(exp)

    def unexport(self, iqn: str) -> None:
        with self.lock:
            try:
                self.target.unexport(iqn)
            except TargetNotRunning:
                pass  # a target daemon that is not running exports nothing

    def refresh_size(self, iqn: str) -> None:
        with self.lock:
            self.target.refresh_size(iqn)

    def actual(self) -> dict[str, Export]:
        """What the target really serves, keyed by IQN."""
        with self.lock:
            return self.target.list_exports()

    def watch(self) -> tuple[bool, object]:
        """Is the target up, and which instance of it (changes when the daemon restarted)."""
        with self.lock:
            up = self.target.alive()
            return up, getattr(self.target, "generation", None)
