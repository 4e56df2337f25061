"""Thin provisioning on zfs and lvmthin pools against the real kernel: zvols and dm-thin LVs made
by the service's own backends, exported thin by both target drivers (tgt: ``thin_provisioning``,
which discards with BLKDISCARD; LIO: ``emulate_tpu``/``emulate_tpws`` on a block backstore), the
kernel's iSCSI initiator discarding through the LUN as a guest's fstrim does, and the pool's own
figures (``zfs list`` used, ``lvs`` data_percent) that drop.  Also what a guest sees when the
pool is really full.

This machine's kernel has neither ZFS, device-mapper nor LIO: every test skips here.  They run in
the kernel VM (``make kernel-vm-thin``: Debian's kernel, zfs-dkms, lvm2, tgt, rtslib-fb and
open-iscsi of Debian 12), on the virtio disks named by PVESAN_THIN_ZFS_DISK, PVESAN_THIN_LVM_DISK
and PVESAN_THIN_FULL_DISK; the figures each test measures are printed (``-s``) for docs/backends.md."""
import hashlib
import os
import re
import shutil
import subprocess
import time

import pytest

from pvesan_service.backends import make_backend
from pvesan_service.targets import Export, make_target_driver

MiB = 1024 * 1024
PREFIX = "iqn.2026-12.org.pvesan.thin:t1."
ANY = ["ALL"]
TGT_PORT, LIO_PORT = 3261, 3260  # both targets at once, each on its own portal
TGT_CONTROL = 7
ZFS_DISK = os.environ.get("PVESAN_THIN_ZFS_DISK")
LVM_DISK = os.environ.get("PVESAN_THIN_LVM_DISK")
FULL_DISK = os.environ.get("PVESAN_THIN_FULL_DISK")  # the full-pool test's own
# tgtd and tgtadm of another tgt than the guest's package (1.0.85), e.g. a build's usr/ directory
TGT_BIN = os.environ.get("PVESAN_THIN_TGT_BIN", "")
TGTD, TGTADM = os.path.join(TGT_BIN, "tgtd"), os.path.join(TGT_BIN, "tgtadm")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (ZFS_DISK and LVM_DISK and FULL_DISK) or not shutil.which("iscsiadm")
    or not shutil.which("tgtd"),
    reason="needs root, PVESAN_THIN_{ZFS,LVM,FULL}_DISK (the kernel VM), open-iscsi and tgt")


def sh(*argv, check=True, timeout=300):
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def wait_until(pred, timeout=60.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError("timed out waiting for %s" % what)


# --- pools -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def zfs_pool():
    sh("modprobe", "zfs")
    sh("zpool", "destroy", "-f", "pvthin", check=False)
    sh("wipefs", "-a", ZFS_DISK, check=False)
    sh("zpool", "create", "-f", "pvthin", ZFS_DISK)
    sh("zfs", "create", "pvthin/pvesan")
    backend = make_backend("zfs", dataset="pvthin/pvesan")  # compression lz4: the service's default
    backend.check()
    yield backend
    sh("zpool", "destroy", "-f", "pvthin", check=False)


@pytest.fixture(scope="module")
def lvm_pool():
    sh("vgremove", "-q", "-y", "-f", "pvthin", check=False)
    sh("wipefs", "-a", LVM_DISK, check=False)
    sh("pvcreate", "-q", "-y", LVM_DISK)
    sh("vgcreate", "-q", "pvthin", LVM_DISK)
    sh("lvcreate", "-q", "-y", "-T", "-L", "384M", "pvthin/data")
    backend = make_backend("lvmthin", vg="pvthin", thinpool="data")
    backend.check()
    yield backend
    sh("vgremove", "-q", "-y", "-f", "pvthin", check=False)
    sh("pvremove", "-q", "-y", LVM_DISK, check=False)


def settle(backend):
    """Let the pool account for what was written or discarded: tgt's rdwr backstore writes through
    the page cache of the zvol/LV, so flush that first; ZFS then frees and counts in its next txg."""
    sh("sync")
    if backend.kind == "zfs":
        sh("zpool", "sync", "pvthin")


# --- targets ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tgt():
    sh("modprobe", "-a", "target_core_mod", "iscsi_target_mod", "target_core_iblock", check=False)
    sh("systemctl", "start", "iscsid", check=False)
    proc = subprocess.Popen([TGTD, "-f", "-C", str(TGT_CONTROL), "--iscsi", "portal=127.0.0.1:%d" % TGT_PORT],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    drv = make_target_driver("tgt", control_port=TGT_CONTROL, iqn_prefix=PREFIX, portals=["127.0.0.1:%d" % TGT_PORT],
                             tgtadm_path=TGTADM)
    wait_until(drv.alive, what="tgtd")
    yield drv
    for iqn in list(drv.list_exports()):
        logout(iqn, TGT_PORT)
        drv.unexport(iqn)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:  # tgtd ignores SIGTERM while it still has targets
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def lio():
    sh("systemctl", "start", "iscsid", check=False)
    drv = make_target_driver("lio", iqn_prefix=PREFIX, portals=["127.0.0.1:%d" % LIO_PORT])
    yield drv
    for iqn in list(drv.list_exports()):
        logout(iqn, LIO_PORT)
        drv.unexport(iqn)


def login(iqn, port):
    portal = "127.0.0.1:%d" % port
    node = ("iscsiadm", "-m", "node", "-T", iqn, "-p", portal)
    sh(*node, "-o", "new")
    sh(*node, "--login")
    link = "/dev/disk/by-path/ip-%s-iscsi-%s-lun-1" % (portal, iqn)
    wait_until(lambda: sh("udevadm", "settle", check=False) and os.path.exists(link), what=link)
    return os.path.realpath(link)


def logout(iqn, port):
    portal = "127.0.0.1:%d" % port
    sh("iscsiadm", "-m", "node", "-T", iqn, "-p", portal, "--logout", check=False)
    sh("iscsiadm", "-m", "node", "-T", iqn, "-p", portal, "-o", "delete", check=False)


def provisioning(dev) -> dict:
    """What the kernel learnt from the LUN: LBPME/LBPRZ (READ CAPACITY 16) and its discard limit."""
    out = sh("sg_readcap", "-l", dev).stdout
    found = dict((k, int(v)) for k, v in re.findall(r"(lbpme|lbprz)=(\d)", out))
    with open("/sys/block/%s/queue/discard_max_bytes" % os.path.basename(dev)) as f:
        found["discard_max_bytes"] = int(f.read())
    return found


def dd(dev, source, mib, seek_mib=0, check=True):
    return sh("dd", "if=" + source, "of=" + dev, "bs=1M", "count=%d" % mib, "seek=%d" % seek_mib, "oflag=direct",
              "status=none", check=check)


def digest(dev, skip_mib, mib):
    return sh("sh", "-c", "dd if=%s bs=1M skip=%d count=%d iflag=direct status=none | sha256sum" % (dev, skip_mib, mib)
              ).stdout.split()[0]


def zeros_digest(mib):
    return hashlib.sha256(bytes(mib * MiB)).hexdigest()


CASES = [("zfs", "tgt"), ("zfs", "lio"), ("lvmthin", "tgt"), ("lvmthin", "lio")]


@pytest.fixture
def exported(request, zfs_pool, lvm_pool, tgt, lio):
    """(backend, block device, volume id, exported thin?) of a 256 MiB thin volume exported by the
    driver as the service would: thin where the target can unmap on the backing store."""
    kind, driver = request.param
    backend = zfs_pool if kind == "zfs" else lvm_pool
    drv, port = (tgt, TGT_PORT) if driver == "tgt" else (lio, LIO_PORT)
    vid = "v-%016x" % (abs(hash((kind, driver, request.node.name))) % (1 << 64))
    path = backend.create(vid, 256 * MiB, thin=True)
    iqn = PREFIX + vid
    drv.export(Export(iqn=iqn, lun=1, backing_path=path, serial=vid[2:], initiators=ANY, thin=True))
    try:
        yield backend, login(iqn, port), vid, drv.can_unmap(path)
    finally:
        logout(iqn, port)
        drv.unexport(iqn)
        settle(backend)
        backend.delete(vid)


@pytest.mark.parametrize("exported", CASES, ids=["%s-%s" % c for c in CASES], indirect=True)
def test_a_discard_through_the_lun_frees_the_pool(exported):
    backend, dev, vid, thin = exported
    since = now()
    seen = provisioning(dev)
    if not thin:  # tgt before 1.0.90 on a zvol or LV: fully provisioned, so no discard fails
        assert seen["lbpme"] == 0 and seen["discard_max_bytes"] == 0, seen
        print("\n%s: tgt %s cannot unmap on a block device: exported fully provisioned (%s)"
              % (dev, sh(TGTADM, "--version").stdout.strip(), seen))
        return
    assert seen["lbpme"] == 1 and seen["lbprz"] == 1 and seen["discard_max_bytes"] > 0, seen
    dd(dev, "/dev/urandom", 64)
    settle(backend)
    written = backend.allocated_bytes(vid)
    assert written >= 60 * MiB, written
    kept = digest(dev, 48, 16)
    res = sh("blkdiscard", "-o", "0", "-l", str(48 * MiB), dev, check=False)  # what fstrim in a guest sends
    assert res.returncode == 0, (res.stderr, kernel_sense(since))
    settle(backend)
    wait_until(lambda: backend.allocated_bytes(vid) <= written - 40 * MiB, what="the pool to free the discarded range")
    freed = written - backend.allocated_bytes(vid)
    assert digest(dev, 0, 48) == zeros_digest(48) and digest(dev, 48, 16) == kept
    print("\n%s: 64 MiB written -> %d bytes allocated; discard of 48 MiB freed %d bytes" % (dev, written, freed))


@pytest.mark.parametrize("exported", [("zfs", "lio"), ("lvmthin", "lio")], ids=["zfs", "lvmthin"], indirect=True)
def test_zeros_written_take_no_space_on_zfs_only(exported):
    backend, dev, vid, _thin = exported
    before = backend.allocated_bytes(vid)
    dd(dev, "/dev/zero", 64, seek_mib=64)  # zeros as data: a guest without discard, a restored image
    settle(backend)
    grown = backend.allocated_bytes(vid) - before
    print("\n%s pool: 64 MiB of zeros written -> allocated grew by %d bytes" % (backend.kind, grown))
    if backend.kind == "zfs":
        assert grown < MiB  # compression (lz4) stores all-zero blocks as holes
    else:
        assert grown >= 60 * MiB  # dm-thin allocates whatever is written: discard is the way back


@pytest.mark.parametrize("driver", ["tgt", "lio"])
def test_a_thick_export_is_fully_provisioned(driver, zfs_pool, tgt, lio):
    drv, port = (tgt, TGT_PORT) if driver == "tgt" else (lio, LIO_PORT)
    vid = "v-00000000000000%02d" % (1 if driver == "tgt" else 2)
    path = zfs_pool.create(vid, 64 * MiB, thin=False)
    iqn = PREFIX + vid
    drv.export(Export(iqn=iqn, lun=1, backing_path=path, serial=vid[2:], initiators=ANY, thin=False))
    try:
        seen = provisioning(login(iqn, port))
        assert seen["lbpme"] == 0 and seen["discard_max_bytes"] == 0, seen
    finally:
        logout(iqn, port)
        drv.unexport(iqn)
        zfs_pool.delete(vid)


def now() -> str:
    return sh("date", "+%Y-%m-%d %H:%M:%S").stdout.strip()


def kernel_sense(since: str) -> str:
    """The SCSI sense lines the initiator's kernel logged since ``since``."""
    out = sh("journalctl", "-k", "--since", since, "--no-pager", "-o", "cat", check=False).stdout
    return "\n".join(line for line in out.splitlines() if "Sense" in line or "critical" in line)


@pytest.mark.parametrize("driver", ["tgt", "lio"])
def test_what_a_guest_sees_when_the_thin_pool_is_full(driver, tgt, lio):
    """A thin pool of 32 MiB that errors when full (lvchange --errorwhenfull y; by default dm-thin
    queues writes for 60 s first), a 128 MiB volume in it, 64 MiB written: the write fails and
    the initiator's kernel logs the sense the target sent."""
    drv, port = (tgt, TGT_PORT) if driver == "tgt" else (lio, LIO_PORT)
    sh("vgremove", "-q", "-y", "-f", "pvfull", check=False)
    sh("wipefs", "-a", FULL_DISK, check=False)
    sh("pvcreate", "-q", "-y", FULL_DISK)
    sh("vgcreate", "-q", "pvfull", FULL_DISK)
    sh("lvcreate", "-q", "-y", "-T", "-L", "32M", "--errorwhenfull", "y", "pvfull/data")
    backend = make_backend("lvmthin", vg="pvfull", thinpool="data")
    vid = "v-0f0f0f0f0f0f0f%02d" % (1 if driver == "tgt" else 2)
    path = backend.create(vid, 128 * MiB, thin=True)
    iqn = PREFIX + vid
    drv.export(Export(iqn=iqn, lun=1, backing_path=path, serial=vid[2:], initiators=ANY, thin=True))
    since = now()
    try:
        dev = login(iqn, port)
        # conv=fsync: tgt's rdwr backstore writes into the page cache and meets the full pool
        # only when it flushes, at the initiator's SYNCHRONIZE CACHE (the guest's fsync/journal)
        res = sh("dd", "if=/dev/urandom", "of=" + dev, "bs=1M", "count=64", "oflag=direct", "conv=fsync",
                 "status=none", check=False)
        time.sleep(2)
        sense = kernel_sense(since)
        print("\n%s, thin pool full: dd rc=%d (%s)\n%s" % (driver, res.returncode, res.stderr.strip(), sense))
        assert res.returncode != 0, res
        if driver == "lio":
            # at the write: Linux 6.1's iblock backstore reports any failed bio so, ENOSPC included
            assert "error writing" in res.stderr and "Input/output error" in res.stderr, res.stderr
            assert "Not Ready" in sense and "Logical unit communication failure" in sense, sense
        else:
            # at the flush: tgt reports every failed write or flush as a medium error with a READ
            # error's sense code (set_medium_error in bs_rdwr.c); the kernel makes it ENODATA
            assert "fsync failed" in res.stderr and "No data available" in res.stderr, res.stderr
            assert "Medium Error" in sense and "Unrecovered read error" in sense, sense
    finally:
        logout(iqn, port)
        drv.unexport(iqn)
        sh("vgremove", "-q", "-y", "-f", "pvfull", check=False)
        sh("pvremove", "-q", "-y", FULL_DISK, check=False)
