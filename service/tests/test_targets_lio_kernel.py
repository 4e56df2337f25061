"""lio driver against the real Linux kernel target: configfs with target_core_mod and
iscsi_target_mod, the real rtslib-fb, and the kernel's own iSCSI initiator (open-iscsi) logging in
over loopback and moving data through /dev/sdX, as a Proxmox node would.

This machine's kernel has no LIO, so here every test skips; they run in the kernel VM
(`scripts/kernel-vm.sh lio`, which boots Debian's kernel and runs this file with the guest's
Python, rtslib-fb and open-iscsi).  test_targets_lio.py covers the same driver against a fake
rtslib on every `make test`."""
import glob
import os
import shutil
import subprocess
import time

import pytest

from pvesan_service.targets import Chap, Export, make_target_driver

PREFIX = "iqn.2026-12.org.pvesan.lio:t1."
ANY = ["ALL"]  # the ACL entry that lets any initiator in (an empty ACL lets none in)
PORTAL = "127.0.0.1:3260"
MiB = 1024 * 1024
CONFIGFS = "/sys/kernel/config/target"


def _kernel_target():
    if os.geteuid() != 0 or not shutil.which("iscsiadm"):
        return False
    subprocess.run(["modprobe", "-a", "target_core_mod", "iscsi_target_mod", "target_core_file"],
                   capture_output=True, check=False)
    try:
        import rtslib_fb  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
    except ImportError:
        return False
    return os.path.isdir(CONFIGFS)


pytestmark = pytest.mark.skipif(not _kernel_target(), reason="needs root, a kernel with LIO (configfs target), rtslib-fb and open-iscsi")


def iscsiadm(*args, check=True):
    return subprocess.run(["iscsiadm", *args], capture_output=True, text=True, check=check, timeout=60)


def login(iqn, chap=None, iface="default"):
    """Kernel initiator login to LUN 1 of ``iqn`` through open-iscsi interface ``iface`` (its
    initiator name): the block device, or the failed iscsiadm run."""
    node = ("-m", "node", "-T", iqn, "-p", PORTAL, "-I", iface)
    iscsiadm(*node, "-o", "new")
    if chap:
        for key, value in (("node.session.auth.authmethod", "CHAP"), ("node.session.auth.username", chap.user),
                           ("node.session.auth.password", chap.password)):
            iscsiadm(*node, "-o", "update", "-n", key, "-v", value)
        if chap.mutual_user:
            for key, value in (("node.session.auth.username_in", chap.mutual_user),
                               ("node.session.auth.password_in", chap.mutual_password)):
                iscsiadm(*node, "-o", "update", "-n", key, "-v", value)
    res = iscsiadm(*node, "--login", check=False)
    if res.returncode != 0:
        iscsiadm(*node, "-o", "delete", check=False)
        return res
    link = "/dev/disk/by-path/ip-%s-iscsi-%s-lun-1" % (PORTAL, iqn)
    for dummy in range(100):
        subprocess.run(["udevadm", "settle"], check=False)
        if os.path.exists(link):
            return os.path.realpath(link)
        time.sleep(0.1)
    raise AssertionError("no %s after login" % link)


def logout(iqn):
    iscsiadm("-m", "node", "-T", iqn, "-p", PORTAL, "--logout", check=False)
    iscsiadm("-m", "node", "-T", iqn, "-p", PORTAL, "-o", "delete", check=False)


def iface(name, initiator):
    """An open-iscsi interface that logs in (and discovers) as ``initiator``: another node."""
    iscsiadm("-m", "iface", "-I", name, "-o", "new", check=False)
    iscsiadm("-m", "iface", "-I", name, "-o", "update", "-n", "iface.initiatorname", "-v", initiator)
    return name


def discover(iface_name):
    """The targets SendTargets discovery lists to the initiator of ``iface_name``."""
    res = iscsiadm("-m", "discovery", "-t", "sendtargets", "-p", PORTAL, "-I", iface_name, "-o", "nonpersistent",
                   check=False)
    return {line.split()[1] for line in res.stdout.splitlines() if line.strip()}


def write_read(dev, pattern, offset=0):
    """Write one 4 KiB block of ``pattern`` at ``offset`` and read it back, bypassing the page cache."""
    block = bytes([pattern]) * 4096
    subprocess.run(["dd", "of=" + dev, "bs=4096", "count=1", "seek=%d" % (offset // 4096), "oflag=direct",
                    "status=none"], input=block, check=True)
    out = subprocess.run(["dd", "if=" + dev, "bs=4096", "count=1", "skip=%d" % (offset // 4096), "iflag=direct",
                          "status=none"], capture_output=True, check=True).stdout
    return out == block


def sectors(dev):
    with open("/sys/block/%s/size" % os.path.basename(dev)) as f:
        return int(f.read())


@pytest.fixture
def lio():
    subprocess.run(["systemctl", "start", "iscsid"], capture_output=True, check=False)
    drv = make_target_driver("lio", iqn_prefix=PREFIX, portals=[PORTAL])
    yield drv
    for iqn in list(drv.list_exports()):
        logout(iqn)
        drv.unexport(iqn)


# Its own fixtures, not conftest's: the guest runs this file with --noconftest (conftest imports
# the whole service, whose dependencies the guest does not have).
@pytest.fixture
def volume(tmp_path):
    path = tmp_path / "v.img"
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
    return str(path)


def own_initiator():
    with open("/etc/iscsi/initiatorname.iscsi") as f:
        return next(line.split("=", 1)[1].strip() for line in f if line.startswith("InitiatorName="))


def test_data_through_the_kernel_target_and_identity(lio, volume):
    iqn = PREFIX + "v-0a1b2c3d4e5f6071"
    lio.export(Export(iqn=iqn, lun=1, backing_path=volume, serial="0a1b2c3d4e5f6071", initiators=ANY))
    lio.export(Export(iqn=iqn, lun=1, backing_path=volume, serial="0a1b2c3d4e5f6071", initiators=ANY))  # idempotent
    dev = login(iqn)
    assert isinstance(dev, str), dev.stderr
    assert write_read(dev, 0x5A, offset=8 * MiB)
    with open(volume, "rb") as f:  # the initiator's write is in the backing file
        f.seek(8 * MiB)
        assert f.read(4096) == b"\x5a" * 4096
    assert sectors(dev) * 512 == 64 * MiB
    vpd80 = open("/sys/block/%s/device/vpd_pg80" % os.path.basename(dev), "rb").read()
    assert b"0a1b2c3d4e5f6071" in vpd80  # the unit serial is the volume's
    seen = lio.list_exports()[iqn]
    assert (seen.backing_path, seen.serial, seen.initiators, seen.chap) == (volume, "0a1b2c3d4e5f6071", ANY, None)


def test_chap_and_mutual_chap_enforced_by_the_kernel(lio, volume):
    iqn = PREFIX + "v-chap"
    chap = Chap("pvesan-u1", "secret-0123456", "pvesan-t1", "mutual-0123456")
    lio.export(Export(iqn=iqn, lun=1, backing_path=volume, serial="vchap", chap=chap, initiators=ANY))
    refused = login(iqn)
    assert not isinstance(refused, str) and refused.returncode != 0  # no credentials
    refused = login(iqn, Chap("pvesan-u1", "wrong-secret-99"))
    assert not isinstance(refused, str) and refused.returncode != 0
    dev = login(iqn, chap)
    assert isinstance(dev, str), dev.stderr
    assert write_read(dev, 0x11)
    assert lio.list_exports()[iqn].chap == chap  # LIO reads passwords back


def test_acl_by_initiator_name(lio, volume):
    iqn = PREFIX + "v-acl"
    lio.export(Export(iqn=iqn, lun=1, backing_path=volume, serial="vacl", initiators=["iqn.2026-12.org.example:other"]))
    refused = login(iqn)
    assert not isinstance(refused, str) and refused.returncode != 0
    lio.export(Export(iqn=iqn, lun=1, backing_path=volume, serial="vacl", initiators=[own_initiator()], readonly=True))
    dev = login(iqn)
    assert isinstance(dev, str), dev.stderr
    with open("/sys/block/%s/ro" % os.path.basename(dev)) as f:
        assert f.read().strip() == "1"  # mapped write-protected


def test_resize_seen_by_the_initiator_after_a_rescan(lio, volume):
    iqn = PREFIX + "v-grow"
    lio.export(Export(iqn=iqn, lun=1, backing_path=volume, serial="vgrow", initiators=ANY))
    dev = login(iqn)
    assert isinstance(dev, str), dev.stderr
    os.truncate(volume, 128 * MiB)
    lio.refresh_size(iqn)
    iscsiadm("-m", "session", "-R")
    for dummy in range(50):
        if sectors(dev) * 512 == 128 * MiB:
            break
        time.sleep(0.1)
    assert sectors(dev) * 512 == 128 * MiB


def test_unexport_leaves_nothing_in_configfs(lio, volume):
    iqn = PREFIX + "v-gone"
    lio.export(Export(iqn=iqn, lun=1, backing_path=volume, serial="vgone", initiators=ANY))
    assert os.path.isdir(os.path.join(CONFIGFS, "iscsi", iqn))
    lio.unexport(iqn)
    lio.unexport(iqn)  # idempotent
    assert not os.path.exists(os.path.join(CONFIGFS, "iscsi", iqn))
    backing = [open(path).read().strip() for path in glob.glob(os.path.join(CONFIGFS, "core", "*", "*", "udev_path"))]
    assert volume not in backing  # its storage object went with it
    assert iqn not in lio.list_exports()


# ------------------------------------------------------------------------------- tenant isolation
# The attacks of service/tests/test_isolation.py at the level LIO decides them: tenant A's target
# (ACL: A's node, CHAP of A) and tenant B's (B's node, CHAP of B), B trying A's target.
NODE_A = "iqn.2026-12.org.pvesan.lio:cluster-a-node1"
NODE_B = "iqn.2026-12.org.pvesan.lio:cluster-b-node1"


@pytest.fixture
def tenants(lio, tmp_path):
    paths = []
    for name in ("a", "b"):
        path = tmp_path / ("%s.img" % name)
        with open(path, "wb") as f:
            f.truncate(16 * MiB)
        paths.append(str(path))
    a = Export(iqn=PREFIX + "v-aaaaaaaaaaaaaaaa", lun=1, backing_path=paths[0], serial="aaaaaaaaaaaaaaaa",
               chap=Chap("pvesan-alpha", "alpha-secret-01"), initiators=[NODE_A])
    # B's account has A's name with B's secret: on tgtd that re-created A's account (which the
    # service now refuses); LIO keeps CHAP per ACL, so it may not even touch A's
    b = Export(iqn=PREFIX + "v-bbbbbbbbbbbbbbbb", lun=1, backing_path=paths[1], serial="bbbbbbbbbbbbbbbb",
               chap=Chap("pvesan-alpha", "beta-chose-this"), initiators=[NODE_B])
    lio.export(a)
    lio.export(b)
    yield a, b, iface("tenant-a", NODE_A), iface("tenant-b", NODE_B)
    for name in ("tenant-a", "tenant-b"):
        for iqn in (a.iqn, b.iqn):
            iscsiadm("-m", "node", "-T", iqn, "-p", PORTAL, "-I", name, "--logout", check=False)
            iscsiadm("-m", "node", "-T", iqn, "-p", PORTAL, "-I", name, "-o", "delete", check=False)
        iscsiadm("-m", "iface", "-I", name, "-o", "delete", check=False)


def test_discovery_shows_each_initiator_only_its_tenants_targets(lio, tenants):
    a, b, iface_a, iface_b = tenants
    assert a.iqn in discover(iface_a) and b.iqn not in discover(iface_a)
    assert b.iqn in discover(iface_b) and a.iqn not in discover(iface_b)
    assert not {a.iqn, b.iqn} & discover(iface("stranger", "iqn.2026-12.org.example:stranger"))
    iscsiadm("-m", "iface", "-I", "stranger", "-o", "delete", check=False)


def test_the_other_tenants_password_opens_nothing(lio, tenants):
    a, b, iface_a, iface_b = tenants
    dev = login(a.iqn, a.chap, iface=iface_a)
    assert isinstance(dev, str), dev.stderr
    assert write_read(dev, 0xA1)
    logout(a.iqn)
    # B from its own node: not on A's ACL
    refused = login(a.iqn, b.chap, iface=iface_b)
    assert not isinstance(refused, str) and refused.returncode != 0
    # B claiming A's node name (names are not authenticated): the ACL lets it try, CHAP refuses
    refused = login(a.iqn, b.chap, iface=iface_a)
    assert not isinstance(refused, str) and refused.returncode != 0
    # A's own login still works, and B's target opens with B's secret only
    dev = login(a.iqn, a.chap, iface=iface_a)
    assert isinstance(dev, str), dev.stderr
    logout(a.iqn)
    dev = login(b.iqn, b.chap, iface=iface_b)
    assert isinstance(dev, str), dev.stderr
    logout(b.iqn)
    refused = login(b.iqn, a.chap, iface=iface_b)
    assert not isinstance(refused, str) and refused.returncode != 0


def test_an_empty_acl_lets_no_initiator_in(lio, volume):
    iqn = PREFIX + "v-none"
    lio.export(Export(iqn=iqn, lun=1, backing_path=volume, serial="vnone", initiators=[]))
    refused = login(iqn)
    assert not isinstance(refused, str) and refused.returncode != 0
    assert iqn not in discover("default")
