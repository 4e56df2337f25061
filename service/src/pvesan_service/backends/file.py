"""file backend: one sparse file per volume in a directory; snapshots and clones by reflink.

Layout under the pool directory::

    <name>.img                      the volume (sparse unless created thick)
    .snapshots/<name>/<snap>.img    its snapshots (reflink copies: instant, share all blocks)
    .tmp/                           files being made; renamed into place only when complete

Snapshots and clones need a filesystem that can reflink (XFS made with ``reflink=1``, btrfs);
``check()`` detects it.  Without reflink the pool still serves volumes but snapshot and clone
raise ``NotSupported`` (or ``check()`` does, when the pool was made with ``require_reflink``).
Rollback rewrites the volume file in place (the target keeps it open), keeping its current size.
A pool on its own disk (``require_mount``) makes no file unless its directory is a mount point:
an unmounted pool (a shared disk the cluster has not mounted on this head, a failed mount) would
otherwise fill the root filesystem with volumes that the other head never sees.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import struct
import uuid

from .base import BackendError, NotInPool, NotSupported, PoolCapacity, VolumeBackend, check_name

FICLONE = 0x40049409  # _IOW(0x94, 9, int) from linux/fs.h
FIDEDUPERANGE = 0xC0189436  # _IOWR(0x94, 54, struct file_dedupe_range) from linux/fs.h
DEDUPE_RANGE = struct.Struct("=QQHHI")  # src_offset, src_length, dest_count, reserved1, reserved2
DEDUPE_INFO = struct.Struct("=qQQiI")  # dest_fd, dest_offset, bytes_deduped, status, reserved
RECLAIM_CHUNK = 64 * 1024  # the smallest all-zero range reclaim frees
RECLAIM_MAX = 16 * 1024 * 1024  # per dedupe call (btrfs's limit; the kernel compares it under lock)


def reflink(src_fd: int, dst_fd: int) -> None:
    """Make ``dst`` share every block of ``src`` (ioctl FICLONE); raises OSError."""
    fcntl.ioctl(dst_fd, FICLONE, src_fd)


def dedupe(src_fd: int, src_offset: int, dst_fd: int, dst_offset: int, length: int) -> int:
    """ioctl FIDEDUPERANGE: if ``dst``'s range still holds what ``src``'s does, make it share
    ``src``'s blocks, checked and done by the kernel under both files' locks; returns the bytes
    shared (0: the range differs by now)."""
    buf = bytearray(DEDUPE_RANGE.pack(src_offset, length, 1, 0, 0) + DEDUPE_INFO.pack(dst_fd, dst_offset, 0, 0, 0))
    fcntl.ioctl(src_fd, FIDEDUPERANGE, buf)
    done, status = DEDUPE_INFO.unpack_from(buf, DEDUPE_RANGE.size)[2:4]
    if status < 0:
        raise OSError(-status, os.strerror(-status))
    return done if status == 0 else 0


def data_extents(fd: int, size: int):
    """(start, end) of the ranges of a file that are not holes (SEEK_DATA/SEEK_HOLE)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size)
        pos = end


class FileBackend(VolumeBackend):
    """Volumes as files in ``path``."""

    kind = "file"
    rollback_needs_unexport = False

    def __init__(self, path: str, require_reflink: bool = False, require_mount: bool = False):
        self.root = os.path.abspath(path)
        self.require_reflink = require_reflink
        self.require_mount = require_mount
        self.reflink: bool | None = None  # known after check()
        self._snapdir = os.path.join(self.root, ".snapshots")
        self._tmpdir = os.path.join(self.root, ".tmp")

    # --- helpers -------------------------------------------------------------------------------
    def _vol(self, name: str) -> str:
        return os.path.join(self.root, check_name(name) + ".img")

    def _snap(self, name: str, snap: str) -> str:
        return os.path.join(self._snapdir, check_name(name), check_name(snap, "snapshot") + ".img")

    def _require_mounted(self) -> None:
        if self.require_mount and not os.path.ismount(self.root):
            raise BackendError("file pool directory %s is not a mount point: mount the pool's filesystem there first "
                               "(in an HA pair the cluster mounts it on the head that runs the service)" % self.root)

    def _tmp(self, name: str) -> str:
        # every new file starts here
        self._require_mounted()
        os.makedirs(self._tmpdir, exist_ok=True)
        return os.path.join(self._tmpdir, "%s.%d.%s" % (name, os.getpid(), uuid.uuid4().hex[:8]))

    def _require_reflink(self, what: str) -> None:
        if self.reflink is None:
            self.check()
        if not self.reflink:
            raise NotSupported("%s needs reflink, which the filesystem of %s does not support; "
                               "use XFS made with 'mkfs.xfs -m reflink=1' or btrfs for this pool" % (what, self.root))

    def _reflink_to_new(self, src: str, dst: str) -> None:
        """Reflink ``src`` into a temp file, then rename it to ``dst`` (never a half-made ``dst``)."""
        tmp = self._tmp(os.path.basename(dst))
        try:
            with open(src, "rb") as fsrc, open(tmp, "wb") as fdst:
                reflink(fsrc.fileno(), fdst.fileno())
                os.fsync(fdst.fileno())
            os.rename(tmp, dst)
        except OSError as exc:
            _unlink(tmp)
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL):
                raise NotSupported("reflink copy of %s failed: %s" % (src, exc.strerror)) from exc
            raise BackendError("cannot copy %s to %s: %s" % (src, dst, exc.strerror)) from exc

    # --- VolumeBackend -------------------------------------------------------------------------
    def check(self) -> None:
        if not os.path.isdir(self.root):
            raise BackendError("file pool directory %s does not exist; create it on an XFS (reflink=1) or btrfs filesystem" % self.root)
        if not os.access(self.root, os.W_OK):
            raise BackendError("file pool directory %s is not writable by the service" % self.root)
        self._require_mounted()
        os.makedirs(self._snapdir, exist_ok=True)
        os.makedirs(self._tmpdir, exist_ok=True)
        self._clean_tmp()
        a, b = self._tmp("probe-a"), self._tmp("probe-b")
        try:
            with open(a, "w+b") as fa:
                fa.write(b"\0" * 4096)
                fa.flush()
                with open(b, "wb") as fb:
                    try:
                        reflink(fa.fileno(), fb.fileno())
                        self.reflink = True
                    except OSError:
                        self.reflink = False
        finally:
            _unlink(a)
            _unlink(b)
        if self.require_reflink and not self.reflink:
            self._require_reflink("this pool (require_reflink)")

    def _clean_tmp(self) -> None:
        """Remove files left by a crash mid-create (their writer process is gone)."""
        for entry in os.listdir(self._tmpdir):
            pid = entry.rsplit(".", 2)[-2] if entry.count(".") >= 2 else ""
            if pid.isdigit() and (int(pid) == os.getpid() or _pid_alive(int(pid))):
                continue
            _unlink(os.path.join(self._tmpdir, entry))

    def capacity(self) -> PoolCapacity:
        st = os.statvfs(self.root)
        total = st.f_blocks * st.f_frsize
        return PoolCapacity(total=total, used=(st.f_blocks - st.f_bfree) * st.f_frsize, available=st.f_bavail * st.f_frsize)

    def create(self, name: str, size: int, thin: bool = True) -> str:
        path = self._vol(name)
        size = _check_size(size)
        if os.path.exists(path):
            have = os.stat(path).st_size
            if have != size:
                raise BackendError("volume %s already exists with %d bytes, not %d" % (name, have, size))
            return path
        tmp = self._tmp(name)
        try:
            with open(tmp, "wb") as f:
                f.truncate(size)
                if not thin:
                    os.posix_fallocate(f.fileno(), 0, size)
            os.rename(tmp, path)  # no fsync here: flush() makes it durable before the commit
        except OSError as exc:
            _unlink(tmp)
            if exc.errno == errno.ENOSPC:
                raise BackendError("no space left in pool %s for %d bytes" % (self.root, size)) from exc
            raise BackendError("cannot create volume %s: %s" % (name, exc.strerror)) from exc
        return path

    def flush(self, name: str) -> None:
        path = self._existing(name)
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)  # the rename into place
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise BackendError("cannot flush volume %s to disk: %s" % (name, exc.strerror)) from exc

    def delete(self, name: str) -> None:
        _unlink(self._vol(name))
        shutil.rmtree(os.path.join(self._snapdir, name), ignore_errors=True)

    def resize(self, name: str, size: int) -> None:
        path = self._existing(name)
        size = _check_size(size)
        have = os.stat(path).st_size
        if size < have:
            raise BackendError("shrinking volume %s from %d to %d bytes is refused (data loss)" % (name, have, size))
        if size > have:
            os.truncate(path, size)

    def path(self, name: str) -> str:
        return self._vol(name)

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._vol(name))

    def size(self, name: str) -> int:
        return os.stat(self._existing(name)).st_size

    def list_volumes(self) -> list[str]:
        return sorted(e[:-4] for e in os.listdir(self.root) if e.endswith(".img") and not e.startswith("."))

    def allocated_bytes(self, name: str) -> int:
        return os.stat(self._existing(name)).st_blocks * 512

    def reclaim(self, name: str) -> int:
        """Free the all-zero 64 KiB ranges of a volume, online.  Each zero range found is deduped
        against a hole of a sparse file: the kernel checks the range still reads as zeros and
        makes it share the hole, i.e. frees it, in one step under the file's lock, so a write
        that lands meanwhile makes the range differ and it is left alone.  Blocks shared with
        snapshots stay in use by them.  Returns the bytes freed."""
        self._require_reflink("reclaim")
        path = self._existing(name)
        zero = self._tmp("zero")
        try:
            with open(zero, "wb") as fz:
                fz.truncate(RECLAIM_MAX)  # all hole
            zfd = os.open(zero, os.O_RDONLY)
            vfd = os.open(path, os.O_RDWR)
            try:
                before = os.fstat(vfd).st_blocks * 512
                size = os.fstat(vfd).st_size
                for start, end in data_extents(vfd, size):
                    self._reclaim_extent(zfd, vfd, start - start % RECLAIM_CHUNK, end)
                os.fsync(vfd)
                after = os.fstat(vfd).st_blocks * 512
            finally:
                os.close(vfd)
                os.close(zfd)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
                raise NotSupported("the filesystem of %s cannot dedupe ranges: %s" % (self.root, exc.strerror)) from exc
            raise BackendError("reclaim of %s failed: %s" % (name, exc.strerror)) from exc
        finally:
            _unlink(zero)
        return max(before - after, 0)  # less when initiators wrote new data meanwhile

    @staticmethod
    def _reclaim_extent(zfd: int, vfd: int, pos: int, end: int) -> None:
        """Dedupe the runs of all-zero chunks of [pos, end) against the zero file."""
        run = None  # start of the run of zero chunks not deduped yet
        zeros = bytes(RECLAIM_CHUNK)
        while pos < end:
            chunk = os.pread(vfd, RECLAIM_CHUNK, pos)
            if not chunk:
                break
            zero = chunk == zeros[:len(chunk)]
            if zero and run is None:
                run = pos
            if run is not None and (not zero or pos + len(chunk) - run >= RECLAIM_MAX):
                dedupe(zfd, 0, vfd, run, (pos + len(chunk) if zero else pos) - run)
                run = None
            pos += len(chunk)
        if run is not None:
            dedupe(zfd, 0, vfd, run, pos - run)

    def snapshot_create(self, name: str, snap: str) -> None:
        src = self._existing(name)
        dst = self._snap(name, snap)
        self._require_reflink("a snapshot")
        if os.path.exists(dst):
            raise BackendError("snapshot %s of volume %s already exists" % (snap, name))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        self._reflink_to_new(src, dst)

    def snapshot_delete(self, name: str, snap: str) -> None:
        _unlink(self._snap(name, snap))

    def snapshot_rollback(self, name: str, snap: str) -> None:
        path = self._existing(name)
        src = self._snap(name, snap)
        if not os.path.exists(src):
            raise NotInPool("snapshot %s of volume %s does not exist" % (snap, name))
        self._require_reflink("a rollback")
        size = os.stat(path).st_size
        try:
            # In place: the target has the file open, a rename would leave it on the old inode.
            with open(src, "rb") as fsrc, open(path, "r+b") as fdst:
                reflink(fsrc.fileno(), fdst.fileno())
                snap_size = os.fstat(fsrc.fileno()).st_size
                if size > snap_size:  # grown since the snapshot: zeros beyond its end
                    fdst.truncate(snap_size)
                fdst.truncate(size)
                os.fsync(fdst.fileno())
        except OSError as exc:
            raise BackendError("rollback of %s to %s failed: %s" % (name, snap, exc.strerror)) from exc

    def list_snapshots(self, name: str) -> list[str]:
        d = os.path.join(self._snapdir, check_name(name))
        try:
            return sorted(e[:-4] for e in os.listdir(d) if e.endswith(".img"))
        except FileNotFoundError:
            return []

    def clone(self, src: str, snap: str, new_name: str) -> str:
        source = self._snap(src, snap)
        dst = self._vol(new_name)
        if not os.path.exists(source):
            raise NotInPool("snapshot %s of volume %s does not exist" % (snap, src))
        self._require_reflink("a clone")
        if os.path.exists(dst):
            raise BackendError("volume %s already exists" % new_name)
        self._reflink_to_new(source, dst)
        return dst

    def _existing(self, name: str) -> str:
        path = self._vol(name)
        if not os.path.isfile(path):
            raise NotInPool("volume %s does not exist in pool %s" % (name, self.root))
        return path


def _check_size(size: int) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size % 512:
        raise BackendError("volume size must be a positive multiple of 512 bytes, not %r" % (size,))
    return size


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
