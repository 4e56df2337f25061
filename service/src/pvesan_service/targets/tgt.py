"""tgt driver: exports through the user-space tgtd, driven by tgtadm at runtime.

tgtd keeps its configuration in memory only, so a tgtd restart loses every target; the driver
notices it (the management socket is re-created) and the reconciler re-applies the exports.

Cost per call is constant: the iqn -> target state map is read once (one ``--op show``) and then
kept in memory, re-read only when tgtd restarted or ``list_exports`` is asked for the truth.
LUN 0 of a tgt target is tgt's controller; the volume is LUN 1.

Backing store type ``rdwr`` (tgt's default, buffered pread/pwrite) is the default: on a file
pool it gave 2-3x the 4k write IOPS of ``aio`` (O_DIRECT native AIO) here.  ``rdwr`` starts
``tgtd -t <n>`` I/O threads per LUN (16 by default), so tgtd must be started with a small ``-t``
for thousands of volumes (16 x 2,000 LUNs exhausted the 32,768 pids here: tgtd said "out of
memory").  ``aio`` adds no thread but takes 128 of the kernel's ``fs.aio-max-nr`` (65536 by
default, so 512 LUNs) per LUN.

``write_through`` (the heads of an HA pair): LUNs are opened with tgt's backing-store flag
``sync`` (O_SYNC), so tgtd acknowledges a write only once it is on the disk.  ``rdwr`` without it
acknowledges from the head's page cache: when a head dies (power, panic) the writes it acknowledged
but the guest never flushed are lost, while the guest runs on at the other head believing them
written.  O_SYNC, not O_DIRECT: on a file pool a volume is a sparse file, and a write into a hole
allocates a block whose extent record lives in the filesystem's journal; O_DIRECT skips the page
cache but leaves that allocation (and the disk's volatile cache) unflushed until an fsync, O_SYNC
flushes both before the write completes.  A configured ``bsoflags: direct`` is kept (``sync:direct``).
tgt's ``aio`` backing store takes no flags (it always opens O_DIRECT), so it cannot be write-through.

tgt cannot change the flags of a LUN in place, and re-creating a LUN under a live session fails
the guest's in-flight I/O, so a LUN keeps the flags it was created with: a changed setting applies
to LUNs created from then on and to every LUN created again (a resize, a tgtd restart, a switchover
or failover of an HA pair, where the new head's fresh tgtd creates them all).  Until then the
driver logs once per tgtd instance that LUNs differ from the configuration.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
from typing import Callable, Optional

from ..shared import _tgt as tgtlib
from .base import ALL_INITIATORS, DATA_LUN, Chap, Export, TargetDriver, TargetError, TargetNotRunning

log = logging.getLogger(__name__)

# tgt's backing-store flags, in the order tgtd prints them ("sync:direct"); several are joined by
# ":" (tgt's str_to_open_flags compares prefixes only, so "sync,direct" would silently be "sync").
BSOFLAGS = ("sync", "direct")


def _bsoflags(text: Optional[str], write_through: bool, bstype: str) -> Optional[str]:
    """The flags LUNs are created with, in tgt's own spelling (None: none)."""
    if text is not None and not isinstance(text, str):
        raise TargetError("tgt bsoflags must be a string such as direct or sync:direct, not %r" % (text,))
    flags = [f.strip() for f in (text or "").split(":") if f.strip()]
    unknown = [f for f in flags if f not in BSOFLAGS]
    if unknown:
        raise TargetError("tgt bsoflags are sync and/or direct, joined by ':' (e.g. sync:direct), not %r" % (text,))
    if write_through:
        flags.append("sync")
    if flags and bstype != "rdwr":
        if write_through:
            raise TargetError("tgt write_through needs bstype rdwr: the %s backing store takes no bsoflags (it opens "
                              "O_DIRECT, which does not make block allocations durable), so it cannot be write-through"
                              % bstype)
        raise TargetError("tgt's %s backing store takes no bsoflags (%s): use bstype rdwr" % (bstype, text))
    return ":".join(f for f in BSOFLAGS if f in flags) or None


class TgtDriver(TargetDriver):
    """Exports volumes through tgtd (control port ``-C <control_port>``)."""

    kind = "tgt"

    def __init__(self, control_port: int = 0, bstype: str = "rdwr", bsoflags: Optional[str] = None,
                 portals: Optional[list[str]] = None, iqn_prefix: Optional[str] = None,
                 vendor: str = "PVESAN", product: str = "volume", tgtadm_path: str = "tgtadm",
                 management: str = "socket", write_through: bool = False, run: Optional[Callable] = None):
        if bstype not in ("rdwr", "aio"):
            raise TargetError("tgt bstype must be rdwr or aio, not %r" % (bstype,))
        if not isinstance(write_through, bool):
            raise TargetError("tgt write_through must be true or false, not %r" % (write_through,))
        if management not in ("socket", "tgtadm"):
            raise TargetError("tgt management must be socket or tgtadm, not %r" % (management,))
        # "socket": the tgtadm requests are sent to tgtd's management socket by the service itself
        # (no process per call), after a check on every tgtd start that it answers exactly as the
        # tgtadm command does; "tgtadm" (or a failed check): the command.
        self.command = tgtlib.Tgtadm(control_port=control_port, tgtadm_path=tgtadm_path, run=run)
        self.tgt = self.command
        self.management = management if run is None else "tgtadm"
        self.bstype = bstype
        self.write_through = write_through
        self.bsoflags = _bsoflags(bsoflags, write_through, bstype)  # normalised: tgtd shows them so
        self._flags_warned = False  # once per tgtd instance: LUNs whose flags differ from bsoflags
        self.portals = list(portals or [])
        self.iqn_prefix = iqn_prefix or ""
        self.vendor = vendor
        self.product = product
        self._lock = threading.RLock()
        self._identity = None
        self._generation = None
        self._targets: Optional[dict[str, dict]] = None  # iqn -> target dict as tgtd has it
        self._passwords: dict[str, str] = {}  # CHAP user -> password set in this tgtd instance
        self._next_tid = 1
        self._unmaps_block_devices: Optional[bool] = None

    # --- state ---------------------------------------------------------------------------------
    def _load(self) -> dict[str, dict]:
        identity = tgtlib.tgtd_identity(self.tgt)
        if identity is None:
            raise TargetNotRunning("tgtd is not running (no management socket %s); start tgtd" % self.tgt.socket_path)
        if identity != self._identity:
            self.tgt = self._transport()
        try:
            targets = tgtlib.read_targets(self.tgt)
        except tgtlib.TgtadmError as exc:
            raise TargetError("cannot read tgtd targets: %s" % exc) from exc
        if identity != self._identity:
            self._passwords = {}
            self._flags_warned = False
        self._identity, self._targets = identity, targets
        self._next_tid = tgtlib.next_free_tid(t["tid"] for t in targets.values())
        return targets

    def _transport(self) -> tgtlib.Tgtadm:
        """The socket when this tgtd answers through it byte for byte as through tgtadm (the
        protocol is tgt's private one), else the tgtadm command."""
        if self.management != "socket":
            return self.command
        direct = tgtlib.Tgtadm(control_port=self.command.control_port, lld=self.command.lld,
                               run=tgtlib.TgtdSocket(self.command.socket_path))
        probe = ("--mode", "system", "--op", "show")
        try:
            if direct.cmd(*probe, check=False) == self.command.cmd(*probe, check=False):
                return direct
            reason = "another answer to 'tgtadm --mode system --op show'"
        except (OSError, ValueError, UnicodeError) as exc:
            reason = str(exc)
        log.warning("tgtd's management socket does not answer as tgtadm does (%s): using the tgtadm command", reason)
        return self.command

    def _state(self) -> dict[str, dict]:
        # A stat of the socket, no connect: a restart shows as a new socket; a dead tgtd makes
        # the tgtadm call fail (and alive(), which the reconciler polls, probes it).
        if self._targets is None or tgtlib.tgtd_identity(self.tgt, probe=False) != self._identity:
            return self._load()
        return self._targets

    def can_unmap(self, backing_path: str) -> bool:
        try:
            on_block_device = stat.S_ISBLK(os.stat(backing_path).st_mode)
        except OSError:
            on_block_device = backing_path.startswith("/dev/")
        if not on_block_device:
            return True
        if self._unmaps_block_devices is None:
            version = self.command.version()
            self._unmaps_block_devices = version >= tgtlib.UNMAP_ON_BLOCK_DEVICES_SINCE
            if not self._unmaps_block_devices:
                log.warning("tgt %s cannot unmap on block devices (tgt 1.0.90 can): thin volumes of zfs and lvmthin "
                            "pools are exported fully provisioned, so guests' discards free nothing there; use tgt "
                            ">= 1.0.90 or the lio driver", ".".join(map(str, version)) or "of unknown version")
        return self._unmaps_block_devices

    def _desired(self, export: Export) -> dict:
        # scsi_id = the serial (the volume id's hex digits): a WWID unique to the volume and
        # stable across tgtd restarts and storage hosts (tgt's default depends on the tid).
        lun = {"lun": export.lun, "path": export.backing_path, "serial": export.serial, "scsi_id": export.serial,
               "vendor": self.vendor,
               "product": self.product, "readonly": export.readonly, "bstype": self.bstype,
               "bsoflags": self.bsoflags, "block_size": export.block_size,
               "thin_provisioning": export.thin and self.can_unmap(export.backing_path)}
        chap = mutual = None
        if export.chap:
            chap = {"user": export.chap.user, "password": export.chap.password}
            if export.chap.mutual_user:
                mutual = {"user": export.chap.mutual_user, "password": export.chap.mutual_password}
        initiators = [i for i in dict.fromkeys(export.initiators) if i != ALL_INITIATORS]  # in order, once
        return {"iqn": export.iqn, "luns": [lun], "initiators": initiators, "chap": chap, "mutual_chap": mutual,
                "any_initiator": ALL_INITIATORS in export.initiators}

    def _up_to_date(self, have: dict, want: dict) -> bool:
        def lun_key(lun):
            return (lun["lun"], lun["path"], lun["serial"], bool(lun["readonly"]), lun["block_size"],
                    bool(lun.get("thin_provisioning")))

        def chap_ok(key):
            h, w = have.get(key), want.get(key)
            if not w:
                return not h
            return bool(h) and h["user"] == w["user"] and self._passwords.get(w["user"]) == w["password"]

        return ([lun_key(lu) for lu in have["luns"]] == [lun_key(lu) for lu in want["luns"]]
                and sorted(have["initiators"]) == sorted(want["initiators"])
                and bool(have.get("allow_all")) == want["any_initiator"]
                and chap_ok("chap") and chap_ok("mutual_chap"))

    # --- TargetDriver --------------------------------------------------------------------------
    def export(self, export: Export) -> None:
        if export.lun != DATA_LUN:
            raise TargetError("tgt exports use LUN %d (LUN 0 is tgt's controller), not %d" % (DATA_LUN, export.lun))
        with self._lock:
            targets = self._state()
            want = self._desired(export)
            have = targets.get(export.iqn)
            if have is not None:
                self._check_flags(export.iqn, have)
            # The flags are not part of "up to date": re-creating a LUN under a live session to change
            # them would fail the guest's in-flight I/O (see the module doc).
            if have is not None and self._up_to_date(have, want):
                return
            apply = dict(want)
            if have is None:
                apply["tid"] = self._next_tid  # kept in memory: no O(n) scan per export
            try:
                # the passwords this tgtd holds are not set again (re-creating an account is what sets one)
                tgtlib.apply_target(self.tgt, apply, have, all_targets=targets, known_passwords=self._passwords)
            except tgtlib.TgtadmError as exc:
                if have is None and "already exists" in str(exc):
                    # Someone else (tgt-admin, the iscsi_target module) took that tid or IQN:
                    # drop what we half-made, re-read the truth and try once more.
                    self._targets = None
                    targets = self._load()
                    if export.iqn in targets and targets[export.iqn]["tid"] != apply["tid"]:
                        raise TargetError("IQN %s already exists in tgtd (tid %s)" % (export.iqn, targets[export.iqn]["tid"])) from exc
                    self._apply_fresh(export, apply, targets)
                    return
                if have is None:  # leave nothing half-made behind
                    self._quietly(self.tgt.delete_target, apply["tid"])
                self._targets = None  # unknown partial state: re-read next time
                raise TargetError("export of %s failed: %s%s" % (export.iqn, exc, self._hint(exc))) from exc
            self._remember(export, want, have, apply)
            if have is not None:
                self._drop_unused_accounts(have)

    def _check_flags(self, iqn: str, have: dict) -> None:
        """Say (once per tgtd instance) that a live LUN was created with other flags than configured."""
        if self._flags_warned:
            return
        lun = next((lu for lu in have["luns"] if lu["lun"] == DATA_LUN), None)
        if lun is None or (lun.get("bsoflags") or None) == self.bsoflags:
            return
        self._flags_warned = True
        log.warning("the LUN of %s was created with backing-store flags %r, the configuration says %r (write_through "
                    "%s); maybe others too. A LUN keeps its flags while it lives: they apply when it is created again "
                    "(a resize, a tgtd restart, an HA switchover or failover); restart tgtd or switch the HA pair "
                    "over to apply them to every LUN", iqn, lun.get("bsoflags") or "", self.bsoflags or "",
                    str(self.write_through).lower())

    def _drop_unused_accounts(self, old: dict) -> None:
        """tgtd accounts are global: delete those of ``old`` (a target's former state) that no
        target uses now, so a name the database gave up is not left behind with its secret."""
        targets = self._targets or {}
        for key in ("chap", "mutual_chap"):
            user = (old.get(key) or {}).get("user")
            if user and not any((t.get(k) or {}).get("user") == user for t in targets.values() for k in ("chap", "mutual_chap")):
                self._quietly(self.tgt.delete_account, user)
                self._passwords.pop(user, None)

    @staticmethod
    def _quietly(method, *args) -> None:
        """A clean-up step whose failure changes nothing (the thing is already gone)."""
        try:
            method(*args)
        except tgtlib.TgtadmError:
            pass

    def _hint(self, exc: Exception) -> str:
        if self.bstype == "aio" and "logicalunit --op new" in str(exc) and "invalid request" in str(exc):
            # tgt asks io_setup() for 128 AIO requests per LUN; fs.aio-max-nr (65536) caps it at 512 LUNs
            return ("; the host's native AIO limit is probably used up: raise it with "
                    "'sysctl -w fs.aio-max-nr=1048576' (tgt needs 128 per LUN), or use bstype rdwr")
        return ""

    def _apply_fresh(self, export: Export, apply: dict, targets: dict) -> None:
        have = targets.get(export.iqn)
        if have is None:
            apply["tid"] = tgtlib.next_free_tid(t["tid"] for t in targets.values())
        try:
            tgtlib.apply_target(self.tgt, apply, have, all_targets=targets, known_passwords=self._passwords)
        except tgtlib.TgtadmError as exc:
            self._targets = None
            raise TargetError("export of %s failed: %s" % (export.iqn, exc)) from exc
        self._remember(export, self._desired(export), have, apply)

    def _remember(self, export: Export, want: dict, have: Optional[dict], apply: dict) -> None:
        state = dict(want, tid=have["tid"] if have else apply["tid"], allow_all=want["any_initiator"])
        state["luns"] = [dict(lu) for lu in want["luns"]]
        for key in ("chap", "mutual_chap"):
            if want[key]:
                state[key] = {"user": want[key]["user"], "password": None}
        self._targets[export.iqn] = state
        self._next_tid = max(self._next_tid, state["tid"] + 1)

    def unexport(self, iqn: str) -> None:
        with self._lock:
            targets = self._state()
            have = targets.get(iqn)
            if have is None:
                return
            try:
                tgtlib.remove_target(self.tgt, have)
            except tgtlib.TgtadmError as exc:
                if "can't find the target" not in str(exc):
                    self._targets = None
                    if tgtlib.tgtd_identity(self.tgt) is None:  # died meanwhile: it took the target with it
                        raise TargetNotRunning("tgtd is not running: %s" % exc) from exc
                    raise TargetError("unexport of %s failed: %s" % (iqn, exc)) from exc
            del targets[iqn]
            self._drop_unused_accounts(have)

    def list_exports(self) -> dict[str, Export]:
        with self._lock:
            self._targets = None
            targets = self._load()
        result = {}
        for iqn, t in targets.items():
            if not iqn.startswith(self.iqn_prefix):
                continue
            lun = next((lu for lu in t["luns"] if lu["lun"] == DATA_LUN), None)
            chap = None
            if t["chap"]:
                mutual = t["mutual_chap"] or {}
                chap = Chap(user=t["chap"]["user"], password=self._passwords.get(t["chap"]["user"]),
                            mutual_user=mutual.get("user"), mutual_password=self._passwords.get(mutual.get("user")))
            result[iqn] = Export(iqn=iqn, lun=DATA_LUN, backing_path=lun["path"] if lun else "",
                                 serial=lun["serial"] if lun else "", chap=chap,
                                 initiators=([ALL_INITIATORS] if t["allow_all"] else []) + list(t["initiators"]),
                                 readonly=bool(lun and lun["readonly"]), block_size=lun["block_size"] if lun else 512,
                                 thin=bool(lun and lun.get("thin_provisioning")))
        return result

    def refresh_size(self, iqn: str) -> None:
        with self._lock:
            have = self._state().get(iqn)
            if have is None:
                raise TargetError("%s is not exported; nothing to refresh" % iqn)
            lun = next((lu for lu in have["luns"] if lu["lun"] == DATA_LUN), None)
            if lun is None:
                raise TargetError("%s has no LUN %d" % (iqn, DATA_LUN))
            # the LUN is created again, so with the configured flags (no extra disruption)
            lun = dict(lun, vendor=self.vendor, product=self.product, bsoflags=self.bsoflags)
            lun.setdefault("bstype", self.bstype)
            try:
                tgtlib.refresh_lun(self.tgt, have["tid"], lun)
            except tgtlib.TgtadmError as exc:
                self._targets = None
                raise TargetError("size refresh of %s failed: %s" % (iqn, exc)) from exc
            have["luns"] = [dict(lu, bsoflags=self.bsoflags) if lu["lun"] == DATA_LUN else lu for lu in have["luns"]]

    def wwid(self, serial: str) -> Optional[str]:
        return tgtlib.naa_wwid(serial)

    @property
    def generation(self):
        """Changes when tgtd restarted (seen by ``alive``): the reconciler re-applies then."""
        return self._generation

    def alive(self) -> bool:
        with self._lock:
            identity = tgtlib.tgtd_identity(self.tgt)
            if identity is None:
                self._targets = None  # dead: the next export reloads and reports it
                return False
            self._generation = identity
            if identity != self._identity:
                self._targets = None  # restarted: every target is gone, reload on next use
            try:
                self.tgt.show_system_text()
            except tgtlib.TgtadmError:
                return False
            return True
