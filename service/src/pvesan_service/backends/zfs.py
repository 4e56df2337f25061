"""zfs backend: one zvol per volume under a dataset, driven through the ``zfs`` CLI.

``<dataset>/<name>`` is the volume (``zfs create -s -V`` when thin), ``<dataset>/<name>@<snap>``
its snapshots, clones are ``zfs clone`` (thin: they share blocks with the snapshot, which then
cannot be deleted while the clone lives).  Devices are ``/dev/zvol/<dataset>/<name>``.

Sizes are rounded up to a multiple of ``volblocksize`` here, so the size asked of ``zfs create``
is the size the volume gets (zfs 2.1.11 would round ``-V 1000000`` up to 1015808 itself, recorded
in the kernel VM); ``size()`` returns the real ``volsize``.  Rollback works to the most recent snapshot only (``zfs rollback`` without
``-r``, which would destroy newer snapshots silently).
"""
from __future__ import annotations

import re
import time

from .base import BackendError, NotInPool, PoolCapacity, Runner, VolumeBackend, check_name

_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2}
BUSY_RETRIES, BUSY_WAIT = 5, 1.0  # destroy of a zvol that is still open for a moment


def _parse_blocksize(value: str) -> int:
    m = re.match(r"^(\d+)([KM]?)$", str(value).upper())
    if not m:
        raise BackendError("invalid volblocksize %r (e.g. 16K)" % (value,))
    size = int(m.group(1)) * _UNITS[m.group(2)]
    if size < 512 or size & (size - 1):
        raise BackendError("volblocksize must be a power of two of at least 512 bytes, not %r" % (value,))
    return size


class ZfsBackend(VolumeBackend):
    """Volumes as zvols of ``dataset``."""

    kind = "zfs"
    rollback_needs_unexport = False

    def __init__(self, dataset: str, volblocksize: str | None = None, compression: str | None = "lz4",
                 runner: Runner | None = None, zfs: str = "zfs"):
        if not dataset or dataset.startswith("/") or "@" in dataset:
            raise BackendError("zfs pool needs dataset=<pool>/<dataset>, not %r" % (dataset,))
        self.dataset = dataset.rstrip("/")
        self.volblocksize = volblocksize
        self.blocksize = _parse_blocksize(volblocksize) if volblocksize else 16 * 1024  # OpenZFS 2.2 default
        # lz4 unless told: with any compression ZFS also stores all-zero blocks as holes (zero
        # elimination); "inherit" leaves each zvol the dataset's own setting
        self.compression = None if compression in (None, "inherit") else compression
        self.runner = runner or Runner()
        self.zfs = zfs

    def _ds(self, name: str) -> str:
        return "%s/%s" % (self.dataset, check_name(name))

    def _zfs(self, *args: str, check: bool = True):
        return self.runner.run([self.zfs, *args], check=check)

    def _get(self, target: str, *props: str) -> list[str]:
        res = self._zfs("get", "-H", "-p", "-o", "value", ",".join(props), target, check=False)
        if res.rc != 0:
            if "does not exist" in res.stderr:
                raise NotInPool("%s does not exist" % target)
            raise BackendError("zfs get %s %s failed: %s" % (",".join(props), target, res.stderr.strip()))
        return res.stdout.splitlines()

    def _settle(self, name: str) -> None:
        # zvol device nodes appear asynchronously through udev
        self.runner.run(["udevadm", "settle", "--timeout=10", "--exit-if-exists=" + self.path(name)], check=False)

    def check(self) -> None:
        try:
            kind = self._get(self.dataset, "type")
        except NotInPool as exc:
            raise BackendError("zfs dataset %s does not exist; create it with 'zfs create %s'" % (self.dataset, self.dataset)) from exc
        if kind != ["filesystem"]:
            raise BackendError("zfs pool dataset %s is a %s, not a filesystem" % (self.dataset, kind[0] if kind else "?"))

    def capacity(self) -> PoolCapacity:
        used, available = (int(v) for v in self._get(self.dataset, "used", "available"))
        return PoolCapacity(total=used + available, used=used, available=available)

    def create(self, name: str, size: int, thin: bool = True) -> str:
        size = self._round(size)
        ds = self._ds(name)
        args = ["create"] + (["-s"] if thin else []) + ["-V", str(size)]
        if self.volblocksize:
            args += ["-o", "volblocksize=%s" % self.volblocksize]
        if self.compression:
            args += ["-o", "compression=%s" % self.compression]
        res = self._zfs(*args, ds, check=False)
        if res.rc != 0:
            if "dataset already exists" in res.stderr:
                have = self.size(name)
                if have != size:
                    raise BackendError("volume %s already exists with %d bytes, not %d" % (name, have, size))
                return self.path(name)
            if "out of space" in res.stderr:
                raise BackendError("no space left in zfs dataset %s for %d bytes" % (self.dataset, size))
            raise BackendError("zfs create %s failed: %s" % (ds, res.stderr.strip()))
        self._settle(name)
        return self.path(name)

    def _round(self, size: int) -> int:
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise BackendError("volume size must be a positive number of bytes, not %r" % (size,))
        return -(-size // self.blocksize) * self.blocksize

    def delete(self, name: str) -> None:
        ds = self._ds(name)
        # A zvol just closed by the target is often still open for a moment (udev probes it after
        # the last writer closes): "dataset is busy".  Proxmox's ZFSPoolPlugin retries the same way.
        for attempt in range(BUSY_RETRIES + 1):
            res = self._zfs("destroy", "-r", ds, check=False)
            if "dataset is busy" not in res.stderr or attempt == BUSY_RETRIES:
                break
            time.sleep(BUSY_WAIT)
        if res.rc == 0 or "does not exist" in res.stderr:
            return
        if "dependent clones" in res.stderr:
            clones = [line for line in res.stderr.splitlines()[2:] if line.strip()]
            raise BackendError("volume %s has dependent clones (%s); delete them first" % (name, ", ".join(clones)))
        raise BackendError("zfs destroy %s failed: %s" % (ds, res.stderr.strip()))

    def resize(self, name: str, size: int) -> None:
        size = self._round(size)
        have = self.size(name)
        if size < have:
            raise BackendError("shrinking volume %s from %d to %d bytes is refused (data loss)" % (name, have, size))
        if size > have:
            self._zfs("set", "volsize=%d" % size, self._ds(name))

    def path(self, name: str) -> str:
        return "/dev/zvol/%s" % self._ds(name)

    def exists(self, name: str) -> bool:
        try:
            self._get(self._ds(name), "type")
        except NotInPool:
            return False
        return True

    def size(self, name: str) -> int:
        return int(self._get(self._ds(name), "volsize")[0])

    def list_volumes(self) -> list[str]:
        res = self._zfs("list", "-H", "-p", "-o", "name", "-t", "volume", "-d", "1", self.dataset)
        prefix = self.dataset + "/"
        return sorted(n[len(prefix):] for n in res.stdout.split() if n.startswith(prefix))

    def allocated_bytes(self, name: str) -> int:
        return int(self._get(self._ds(name), "used")[0])

    def allocated_map(self, names) -> dict[str, int]:
        res = self._zfs("list", "-H", "-p", "-o", "name,used", "-t", "volume", "-d", "1", self.dataset)  # one zfs list
        prefix, wanted, out = self.dataset + "/", set(names), {}
        for line in res.stdout.splitlines():
            name, used = line.partition("\t")[::2]
            if name.startswith(prefix) and name[len(prefix):] in wanted:
                out[name[len(prefix):]] = int(used)
        return out

    def snapshot_create(self, name: str, snap: str) -> None:
        full = "%s@%s" % (self._ds(name), check_name(snap, "snapshot"))
        res = self._zfs("snapshot", full, check=False)
        if res.rc == 0:
            return
        if "dataset already exists" in res.stderr:
            raise BackendError("snapshot %s of volume %s already exists" % (snap, name))
        if "does not exist" in res.stderr:
            raise NotInPool("volume %s does not exist" % name)
        raise BackendError("zfs snapshot %s failed: %s" % (full, res.stderr.strip()))

    def snapshot_delete(self, name: str, snap: str) -> None:
        full = "%s@%s" % (self._ds(name), check_name(snap, "snapshot"))
        res = self._zfs("destroy", full, check=False)
        if res.rc == 0 or "could not find any snapshots" in res.stderr or "does not exist" in res.stderr:
            return
        if "dependent clones" in res.stderr:
            raise BackendError("snapshot %s of volume %s has dependent clones; delete them first" % (snap, name))
        raise BackendError("zfs destroy %s failed: %s" % (full, res.stderr.strip()))

    def snapshot_rollback(self, name: str, snap: str) -> None:
        full = "%s@%s" % (self._ds(name), check_name(snap, "snapshot"))
        res = self._zfs("rollback", full, check=False)
        if res.rc == 0:
            return
        if "more recent snapshots" in res.stderr:
            newer = [line.split("@", 1)[1] for line in res.stderr.splitlines() if "@" in line and not line.startswith("cannot")]
            raise BackendError("zfs can only roll back to the most recent snapshot; delete the newer snapshots of %s first: %s"
                               % (name, ", ".join(newer)))
        if "does not exist" in res.stderr:
            raise NotInPool("snapshot %s of volume %s does not exist" % (snap, name))
        raise BackendError("zfs rollback %s failed: %s" % (full, res.stderr.strip()))

    def list_snapshots(self, name: str) -> list[str]:
        res = self._zfs("list", "-H", "-p", "-o", "name", "-t", "snapshot", "-s", "createtxg", "-d", "1", self._ds(name), check=False)
        if res.rc != 0:
            if "does not exist" in res.stderr:
                return []
            raise BackendError("zfs list snapshots of %s failed: %s" % (name, res.stderr.strip()))
        return [n.split("@", 1)[1] for n in res.stdout.split() if "@" in n]

    def clone(self, src: str, snap: str, new_name: str) -> str:
        full = "%s@%s" % (self._ds(src), check_name(snap, "snapshot"))
        args = ["clone"] + (["-o", "compression=%s" % self.compression] if self.compression else [])
        res = self._zfs(*args, full, self._ds(new_name), check=False)
        if res.rc != 0:
            if "dataset already exists" in res.stderr:
                raise BackendError("volume %s already exists" % new_name)
            if "does not exist" in res.stderr:
                raise NotInPool("snapshot %s of volume %s does not exist" % (snap, src))
            raise BackendError("zfs clone %s failed: %s" % (full, res.stderr.strip()))
        self._settle(new_name)
        return self.path(new_name)
