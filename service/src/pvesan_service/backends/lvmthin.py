"""lvmthin backend: one thin LV per volume in an LVM thin pool, driven through the lvm2 CLI.

Volumes are ``<vg>/<name>`` (``lvcreate -V <size>b -T <vg>/<thinpool>``), snapshots are thin
snapshots named ``snap_<name>_<snap>`` as Proxmox's own LVM-thin plugin names them (they keep
LVM's activation-skip flag, so they are never active or exported), clones are thin snapshots of
a snapshot made activatable (``-kn``).  Devices are ``/dev/<vg>/<name>``.

Sizes are rounded up to a multiple of 512 bytes here (lvm2 refuses ``-V``/``-L`` byte sizes that
are not: "Size is not a multiple of 512") and by LVM to whole extents (4 MiB by default);
``size()`` returns the real size.
Rollback replaces the LV by a new thin snapshot of the snapshot (as Proxmox does), so the target
must let go of the device first: ``rollback_needs_unexport`` is True.
"""
from __future__ import annotations

import json

from .base import NAME_RE, BackendError, NotInPool, NotSupported, PoolCapacity, Runner, VolumeBackend, check_name

LVS_FIELDS = "lv_name,lv_size,data_percent,pool_lv,origin,lv_attr"
SECTOR = 512


def _sectors(size: int) -> int:
    """``size`` rounded up to whole 512-byte sectors, the unit lvm2 accepts byte sizes in."""
    return -(-size // SECTOR) * SECTOR


def _missing(stderr: str) -> bool:
    """lvm2's "does not exist" messages: "Failed to find logical volume", "Volume group ... not
    found", "Snapshot origin LV ... not found in Volume group ..." (recorded, lvm2 2.03.16)."""
    return "Failed to find" in stderr or "not found" in stderr


class LvmThinBackend(VolumeBackend):
    """Volumes as thin LVs of ``vg``/``thinpool``."""

    kind = "lvmthin"
    rollback_needs_unexport = True

    def __init__(self, vg: str, thinpool: str, runner: Runner | None = None):
        if not vg or not thinpool:
            raise BackendError("lvmthin pool needs vg= and thinpool=")
        self.vg = vg
        self.thinpool = thinpool
        self.runner = runner or Runner()

    def _lv(self, name: str) -> str:
        return "%s/%s" % (self.vg, check_name(name))

    def _snap_lv(self, name: str, snap: str) -> str:
        return "snap_%s_%s" % (check_name(name), check_name(snap, "snapshot"))

    def _lvs(self, target: str) -> list[dict]:
        """``lvs`` report rows of ``target`` (a VG or VG/LV) with sizes in bytes."""
        res = self.runner.run(["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", LVS_FIELDS, target], check=False)
        if res.rc != 0:
            if _missing(res.stderr):
                raise NotInPool("%s does not exist" % target)
            raise BackendError("lvs %s failed: %s" % (target, res.stderr.strip()))
        try:
            return [row for report in json.loads(res.stdout)["report"] for row in report.get("lv", [])]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendError("cannot parse lvs output for %s: %s" % (target, exc)) from exc

    def _row(self, name: str) -> dict:
        rows = self._lvs(self._lv(name))
        if not rows:
            raise NotInPool("volume %s does not exist" % name)
        return rows[0]

    def check(self) -> None:
        try:
            rows = self._lvs("%s/%s" % (self.vg, self.thinpool))
        except NotInPool as exc:
            raise BackendError("thin pool %s/%s does not exist; create it with 'lvcreate -T -L <size> %s/%s'"
                               % (self.vg, self.thinpool, self.vg, self.thinpool)) from exc
        if not rows or not rows[0]["lv_attr"].startswith("t"):
            raise BackendError("%s/%s is not a thin pool" % (self.vg, self.thinpool))

    def capacity(self) -> PoolCapacity:
        row = self._lvs("%s/%s" % (self.vg, self.thinpool))[0]
        total = int(row["lv_size"])
        used = int(total * float(row["data_percent"] or 0) / 100)
        return PoolCapacity(total=total, used=used, available=total - used)

    def create(self, name: str, size: int, thin: bool = True) -> str:
        if not thin:
            raise NotSupported("volumes of an lvmthin pool are always thin; use a thin service type")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise BackendError("volume size must be a positive number of bytes, not %r" % (size,))
        size = _sectors(size)
        res = self.runner.run(["lvcreate", "-q", "-y", "-n", check_name(name), "-V", "%db" % size,
                               "-T", "%s/%s" % (self.vg, self.thinpool)], check=False)
        if res.rc != 0:
            if "already exists" in res.stderr:
                have = self.size(name)
                if have < size or have >= size + self._extent():
                    raise BackendError("volume %s already exists with %d bytes, not %d" % (name, have, size))
                return self.path(name)
            raise BackendError("lvcreate %s failed: %s" % (name, res.stderr.strip()))
        return self.path(name)

    def _extent(self) -> int:
        res = self.runner.run(["vgs", "--noheadings", "--units", "b", "--nosuffix", "-o", "vg_extent_size", self.vg])
        return int(res.stdout.strip())

    def delete(self, name: str) -> None:
        for snap in self.list_snapshots(name):
            self.snapshot_delete(name, snap)
        res = self.runner.run(["lvremove", "-q", "-y", self._lv(name)], check=False)
        if res.rc != 0 and not _missing(res.stderr):
            raise BackendError("lvremove %s failed: %s" % (name, res.stderr.strip()))

    def resize(self, name: str, size: int) -> None:
        size = _sectors(size)
        have = self.size(name)
        if size < have:
            raise BackendError("shrinking volume %s from %d to %d bytes is refused (data loss)" % (name, have, size))
        if size > have:
            self.runner.run(["lvextend", "-q", "-L", "%db" % size, self._lv(name)])

    def path(self, name: str) -> str:
        return "/dev/%s" % self._lv(name)

    def exists(self, name: str) -> bool:
        try:
            self._row(name)
        except NotInPool:
            return False
        return True

    def size(self, name: str) -> int:
        return int(self._row(name)["lv_size"])

    def _pool_rows(self) -> list[dict]:
        return [r for r in self._lvs(self.vg) if r["pool_lv"] == self.thinpool]

    def list_volumes(self) -> list[str]:
        return sorted(r["lv_name"] for r in self._pool_rows() if NAME_RE.match(r["lv_name"]))

    def allocated_bytes(self, name: str) -> int:
        return self._allocated(self._row(name))

    @staticmethod
    def _allocated(row: dict) -> int:
        return int(int(row["lv_size"]) * float(row["data_percent"] or 0) / 100)

    def allocated_map(self, names) -> dict[str, int]:
        wanted = set(names)
        return {r["lv_name"]: self._allocated(r) for r in self._pool_rows() if r["lv_name"] in wanted}  # one lvs

    def snapshot_create(self, name: str, snap: str) -> None:
        lv = self._snap_lv(name, snap)
        res = self.runner.run(["lvcreate", "-q", "-y", "-s", "-n", lv, self._lv(name)], check=False)
        if res.rc == 0:
            return
        if "already exists" in res.stderr:
            raise BackendError("snapshot %s of volume %s already exists" % (snap, name))
        if _missing(res.stderr):
            raise NotInPool("volume %s does not exist" % name)
        raise BackendError("lvcreate snapshot %s failed: %s" % (lv, res.stderr.strip()))

    def snapshot_delete(self, name: str, snap: str) -> None:
        res = self.runner.run(["lvremove", "-q", "-y", "%s/%s" % (self.vg, self._snap_lv(name, snap))], check=False)
        if res.rc != 0 and not _missing(res.stderr):
            raise BackendError("lvremove of snapshot %s failed: %s" % (snap, res.stderr.strip()))

    def snapshot_rollback(self, name: str, snap: str) -> None:
        lv = self._snap_lv(name, snap)
        if snap not in self.list_snapshots(name):
            raise NotInPool("snapshot %s of volume %s does not exist" % (snap, name))
        res = self.runner.run(["lvremove", "-q", "-y", self._lv(name)], check=False)
        if res.rc != 0:
            raise BackendError("rollback of %s: lvremove failed (is it still exported?): %s" % (name, res.stderr.strip()))
        self.runner.run(["lvcreate", "-q", "-y", "-s", "-kn", "-ay", "-n", name, "%s/%s" % (self.vg, lv)])

    def list_snapshots(self, name: str) -> list[str]:
        prefix = "snap_%s_" % check_name(name)
        # by name only: after a rollback the snapshots' origin LV is gone (origin is empty)
        return sorted(r["lv_name"][len(prefix):] for r in self._pool_rows() if r["lv_name"].startswith(prefix))

    def clone(self, src: str, snap: str, new_name: str) -> str:
        lv = self._snap_lv(src, snap)
        res = self.runner.run(["lvcreate", "-q", "-y", "-s", "-kn", "-ay", "-n", check_name(new_name),
                               "%s/%s" % (self.vg, lv)], check=False)
        if res.rc != 0:
            if "already exists" in res.stderr:
                raise BackendError("volume %s already exists" % new_name)
            if _missing(res.stderr):
                raise NotInPool("snapshot %s of volume %s does not exist" % (snap, src))
            raise BackendError("lvcreate clone %s failed: %s" % (new_name, res.stderr.strip()))
        return self.path(new_name)
