"""file backend on a real loop-mounted XFS (reflink=1), and on tmpfs (no reflink).

The filesystems are made and torn down by the fixtures below (needs root, mkfs.xfs, loop devices).
"""
import multiprocessing
import os
import random
import shutil
import subprocess
import tempfile

import pytest

from pvesan_service.backends import BackendError, NotInPool, NotSupported, make_backend

MiB = 1024 * 1024

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mkfs.xfs"), reason="needs root and mkfs.xfs")


def _mount_xfs(size="1G"):
    top = tempfile.mkdtemp(prefix="pvesan-xfs-")
    image, mnt = os.path.join(top, "fs.img"), os.path.join(top, "mnt")
    os.mkdir(mnt)
    subprocess.run(["truncate", "-s", size, image], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", image], check=True)
    subprocess.run(["mount", "-o", "loop", image, mnt], check=True)
    return top, mnt


def _umount(top, mnt):
    subprocess.run(["umount", mnt], check=False)  # mount -o loop frees its loop device on umount
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def xfs():
    top, mnt = _mount_xfs()
    yield mnt
    _umount(top, mnt)


@pytest.fixture
def pool(xfs):
    path = tempfile.mkdtemp(dir=xfs)
    backend = make_backend("file", path=path)
    backend.check()
    yield backend
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tmpfs_pool():
    mnt = tempfile.mkdtemp(prefix="pvesan-tmpfs-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "none", mnt], check=True)
    yield mnt
    subprocess.run(["umount", mnt], check=False)
    os.rmdir(mnt)


def _write(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _read(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


pytestmark = [needs_root, pytest.mark.e2e]


def test_check_detects_reflink_and_capacity_is_real(pool, xfs):
    assert pool.reflink is True
    cap = pool.capacity()
    st = os.statvfs(xfs)
    assert cap.total == st.f_blocks * st.f_frsize
    assert 0 < cap.used < cap.total and 0 < cap.available < cap.total


def test_create_is_thin_idempotent_and_conflicts(pool):
    path = pool.create("v-1", 64 * MiB)
    assert path == pool.path("v-1") and os.path.getsize(path) == 64 * MiB
    assert pool.allocated_bytes("v-1") == 0
    assert pool.create("v-1", 64 * MiB) == path  # same create again: same volume
    with pytest.raises(BackendError, match="already exists"):
        pool.create("v-1", 32 * MiB)
    assert pool.exists("v-1") and pool.list_volumes() == ["v-1"] and pool.size("v-1") == 64 * MiB
    _write(path, 0, b"x" * MiB)
    assert pool.allocated_bytes("v-1") >= MiB


def test_flush_makes_a_created_volume_durable_and_needs_the_volume(pool):
    pool.create("v-flush", 8 * MiB)
    pool.flush("v-flush")  # fsync of the file and of the pool directory (the rename into place)
    assert pool.size("v-flush") == 8 * MiB and pool.allocated_bytes("v-flush") == 0
    with pytest.raises(NotInPool):
        pool.flush("v-missing")


def test_thick_create_allocates(pool):
    pool.create("v-thick", 8 * MiB, thin=False)
    assert pool.allocated_bytes("v-thick") >= 8 * MiB


def test_invalid_names_and_sizes(pool):
    for bad in ("../etc", "A", "", "a/b", "-x"):
        with pytest.raises(BackendError):
            pool.create(bad, MiB)
    for bad in (0, -1, 1000, True):
        with pytest.raises(BackendError):
            pool.create("v-2", bad)
    with pytest.raises(NotInPool):
        pool.size("nope")


def test_resize_grows_and_refuses_shrink(pool):
    pool.create("v-r", 16 * MiB)
    pool.resize("v-r", 32 * MiB)
    assert pool.size("v-r") == 32 * MiB
    pool.resize("v-r", 32 * MiB)
    with pytest.raises(BackendError, match="shrink"):
        pool.resize("v-r", 16 * MiB)


def test_snapshot_rollback_clone_by_content(pool):
    path = pool.create("v-s", 16 * MiB)
    _write(path, 0, b"A" * 4096)
    _write(path, 8 * MiB, b"B" * 4096)
    pool.snapshot_create("v-s", "s1")
    assert pool.list_snapshots("v-s") == ["s1"]
    with pytest.raises(BackendError, match="already exists"):
        pool.snapshot_create("v-s", "s1")
    _write(path, 0, b"C" * 4096)
    pool.resize("v-s", 32 * MiB)
    _write(path, 20 * MiB, b"D" * 4096)

    clone = pool.clone("v-s", "s1", "v-c")
    assert _read(clone, 0, 4096) == b"A" * 4096 and _read(clone, 8 * MiB, 4096) == b"B" * 4096
    assert os.path.getsize(clone) == 16 * MiB and pool.list_volumes() == ["v-c", "v-s"]

    with open(path, "rb") as held:  # the target keeps the file open: rollback must be in place
        pool.snapshot_rollback("v-s", "s1")
        held.seek(0)
        assert held.read(4096) == b"A" * 4096
    assert pool.size("v-s") == 32 * MiB  # keeps its grown size, zeros past the snapshot's end
    assert _read(path, 20 * MiB, 4096) == b"\0" * 4096
    # the clone is independent of its origin
    _write(clone, 0, b"E" * 4096)
    assert _read(path, 0, 4096) == b"A" * 4096
    pool.delete("v-s")
    assert _read(clone, 8 * MiB, 4096) == b"B" * 4096
    assert pool.list_snapshots("v-s") == [] and not pool.exists("v-s")
    pool.delete("v-s")  # idempotent


def test_snapshot_delete_and_missing(pool):
    pool.create("v-d", MiB)
    pool.snapshot_create("v-d", "s1")
    pool.snapshot_delete("v-d", "s1")
    pool.snapshot_delete("v-d", "s1")
    assert pool.list_snapshots("v-d") == []
    with pytest.raises(NotInPool):
        pool.snapshot_rollback("v-d", "s1")
    with pytest.raises(NotInPool):
        pool.clone("v-d", "s1", "v-e")
    with pytest.raises(NotInPool):
        pool.snapshot_create("nope", "s1")


def test_crash_leftovers_are_cleaned_and_never_listed(pool):
    # a file of a writer that died mid-create (pid 2**22+1 is above pid_max's default)
    leftover = os.path.join(pool.root, ".tmp", "v-x.img.%d.deadbeef" % (2 ** 22 + 1))
    open(leftover, "wb").close()
    assert pool.list_volumes() == []
    pool.check()
    assert not os.path.exists(leftover)


def _allocated(path) -> int:
    return os.stat(path).st_blocks * 512


def test_reclaim_frees_zero_ranges_and_keeps_every_byte(pool):
    path = pool.create("v-1", 64 * MiB)
    content = b"".join([b"\0" * 8 * MiB, b"D" * MiB, b"\0" * 7 * MiB, b"\0" * 100 + b"x" + b"\0" * (MiB - 101),
                        b"\0" * 47 * MiB])
    _write(path, 0, content)  # zeros written as data: 64 MiB allocated
    os.sync()
    assert _allocated(path) == 64 * MiB
    freed = pool.reclaim("v-1")
    assert _read(path, 0, 64 * MiB) == content
    # what is left: the 1 MiB of D and the 64 KiB around the lone x
    assert _allocated(path) == MiB + 64 * 1024 and freed == 64 * MiB - _allocated(path)
    assert pool.reclaim("v-1") == 0  # nothing more to free


def test_reclaim_leaves_blocks_shared_with_snapshots(pool):
    path = pool.create("v-1", 16 * MiB)
    _write(path, 0, b"\0" * 16 * MiB)
    pool.snapshot_create("v-1", "s1")
    pool.reclaim("v-1")
    assert _read(path, 0, 16 * MiB) == b"\0" * 16 * MiB
    assert _allocated(pool._snap("v-1", "s1")) == 16 * MiB  # the snapshot still has its blocks


def _writer(path, size, log_path, stop_path):
    """Child process: random 4 KiB blocks until ``stop_path`` exists, each logged after it is written."""
    fd = os.open(path, os.O_WRONLY)
    rnd = random.Random(7)
    with open(log_path, "wb") as log:
        while not os.path.exists(stop_path):
            offset = rnd.randrange(size // 4096) * 4096
            data = rnd.randbytes(4096)
            os.pwrite(fd, data, offset)
            log.write(offset.to_bytes(8, "little") + data)
    os.close(fd)


def test_reclaim_loses_no_concurrent_write(pool, tmp_path):
    """Another process keeps writing 4 KiB blocks into the zero ranges while reclaim runs: every
    block reads back as last written.  (A check-then-punch, pread then fallocate(PUNCH_HOLE), lost
    1 of 28,888 such writes in 3 s here.)"""
    size = 256 * MiB
    path = pool.create("v-1", size)
    _write(path, 0, b"\0" * size)
    os.sync()
    log_path, stop_path = str(tmp_path / "writes"), str(tmp_path / "stop")
    child = multiprocessing.get_context("fork").Process(target=_writer, args=(path, size, log_path, stop_path))
    child.start()
    try:
        for _round in range(3):
            pool.reclaim("v-1")
    finally:
        open(stop_path, "w").close()
        child.join(30)
    raw = open(log_path, "rb").read()
    expected = {int.from_bytes(raw[i:i + 8], "little"): raw[i + 8:i + 4104] for i in range(0, len(raw), 4104)}
    assert len(expected) > 1000, "the writer did not overlap the reclaim"
    image = _read(path, 0, size)
    assert [o for o, data in expected.items() if image[o:o + 4096] != data] == []
    touched = {o // (64 * 1024) for o in expected}
    assert _allocated(path) <= len(touched) * 64 * 1024  # and the chunks nobody wrote to were freed


def test_reclaim_needs_reflink(tmpfs_pool):
    backend = make_backend("file", path=tmpfs_pool)
    backend.check()
    backend.create("v-1", MiB)
    with pytest.raises(NotSupported, match="reclaim needs reflink"):
        backend.reclaim("v-1")


def test_no_reflink_refused_with_clear_error(tmpfs_pool):
    backend = make_backend("file", path=tmpfs_pool)
    backend.check()
    assert backend.reflink is False
    backend.create("v-1", MiB)  # plain volumes still work
    with pytest.raises(NotSupported, match="reflink=1"):
        backend.snapshot_create("v-1", "s1")
    with pytest.raises(NotSupported, match="reflink"):
        make_backend("file", path=tmpfs_pool, require_reflink=True).check()


def test_pool_on_its_own_disk_makes_no_file_unless_mounted(tmpfs_pool):
    """require_mount: an unmounted pool directory (the shared disk mounted on the other head, a
    failed mount) is refused, and no file lands on the filesystem underneath."""
    mounted = make_backend("file", path=tmpfs_pool, require_mount=True)
    mounted.check()
    mounted.create("v-1", MiB)
    subprocess.run(["umount", tmpfs_pool], check=True)
    try:
        with pytest.raises(BackendError, match="not a mount point"):
            mounted.create("v-2", MiB)
        with pytest.raises(BackendError, match="not a mount point"):
            make_backend("file", path=tmpfs_pool, require_mount=True).check()
        assert os.listdir(tmpfs_pool) == []
    finally:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "none", tmpfs_pool], check=True)


def test_missing_pool_directory():
    with pytest.raises(BackendError, match="does not exist"):
        make_backend("file", path="/nonexistent/pvesan").check()
    with pytest.raises(BackendError, match="unknown backend"):
        make_backend("ceph")
