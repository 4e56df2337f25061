"""tgt driver end to end: a real tgtd on a private portal and control port (started and stopped by
the fixture), real libiscsi clients (iscsi-inq, iscsi-readcapacity16) and qemu-io."""
import json
import logging
import os
import shutil
import subprocess
import time

import pytest

from conftest import Tgtd
from pvesan_service.backends import make_backend
from pvesan_service.targets import Chap, Export, TargetError, make_target_driver
from pvesan_service.shared import _tgt as tgtlib
from pvesan_service.shared._tgt import parse_show

MiB = 1024 * 1024
ANY = ["ALL"]  # the ACL entry that lets any initiator in (an empty ACL lets none in)
PREFIX = "iqn.2026-11.io.pvesan:test."
TOOLS = ("tgtd", "tgtadm", "qemu-io", "iscsi-inq", "iscsi-readcapacity16")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0 or not all(shutil.which(t) for t in TOOLS),
                       reason="needs root, tgt, qemu-utils/qemu-block-extra and libiscsi-bin"),
]


@pytest.fixture(scope="module")
def tgtd(tgtd_daemon):
    """conftest's private tgtd, under the name these tests use."""
    return tgtd_daemon


@pytest.fixture(params=["socket", "tgtadm"])
def driver(request, tgtd):
    """The driver both ways: its own requests on tgtd's management socket (the default) and the
    tgtadm command; every test here runs with each."""
    drv = make_target_driver("tgt", control_port=tgtd.control, iqn_prefix=PREFIX, management=request.param)
    yield drv
    assert (drv.tgt is drv.command) == (request.param == "tgtadm")  # no silent fallback
    for iqn in list(drv.list_exports()):
        drv.unexport(iqn)


@pytest.fixture
def volume(tmp_path):
    path = tmp_path / "v.img"
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
    return str(path)


def qemu_io(url, *commands):
    argv = ["qemu-io", "-f", "raw"]
    for c in commands:
        argv += ["-c", c]
    return subprocess.run(argv + [url], capture_output=True, text=True, timeout=60, check=False)


def inq(url, initiator=None):
    argv = ["iscsi-inq"] + (["-i", initiator] if initiator else []) + [url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def capacity(url):
    out = subprocess.run(["iscsi-readcapacity16", url], capture_output=True, text=True, timeout=60, check=True).stdout
    return int(next(line for line in out.splitlines() if line.startswith("Total size:")).split(":")[1])


def test_export_data_round_trip_and_idempotent(tgtd, driver, volume):
    iqn = PREFIX + "v-data"
    exp = Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="vdata")
    driver.export(exp)
    res = qemu_io(tgtd.url(iqn), "write -P 0x5a 1M 2M", "read -P 0x5a 1M 2M")
    assert res.returncode == 0 and "Pattern verification failed" not in res.stdout, res.stderr
    with open(volume, "rb") as f:
        f.seek(MiB)
        assert f.read(2 * MiB) == b"\x5a" * 2 * MiB
    assert "Vendor:PVESAN" in inq(tgtd.url(iqn)).stdout

    calls = []
    driver.tgt._run, real = (lambda argv: calls.append(argv) or real(argv)), driver.tgt._run
    try:
        driver.export(exp)  # same state: no tgtadm call at all (no O(n) show per call either)
    finally:
        driver.tgt._run = real
    assert calls == []
    seen = driver.list_exports()[iqn]
    assert (seen.backing_path, seen.serial, seen.lun, seen.initiators, seen.chap) == (volume, "vdata", 1, ANY, None)


def test_chap_and_mutual_chap_enforced(tgtd, driver, volume):
    iqn = PREFIX + "v-chap"
    driver.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="vchap", chap=Chap("tenant1", "incoming-secret1")))
    assert inq(tgtd.url(iqn)).returncode != 0
    assert inq(tgtd.url(iqn, "tenant1", "wrong-secret-123")).returncode != 0
    assert inq(tgtd.url(iqn, "tenant1", "incoming-secret1")).returncode == 0

    driver.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="vchap",
                         chap=Chap("tenant1", "incoming-secret1", "target1", "outgoing-secret1")))
    good = "?target_user=target1&target_password=outgoing-secret1"
    assert inq(tgtd.url(iqn, "tenant1", "incoming-secret1", good)).returncode == 0
    bad = "?target_user=target1&target_password=not-the-target1"
    assert inq(tgtd.url(iqn, "tenant1", "incoming-secret1", bad)).returncode != 0

    # changed password: the old one stops working
    driver.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="vchap", chap=Chap("tenant1", "rotated-secret12")))
    assert inq(tgtd.url(iqn, "tenant1", "incoming-secret1")).returncode != 0
    assert inq(tgtd.url(iqn, "tenant1", "rotated-secret12")).returncode == 0
    # CHAP off again: no credentials needed
    driver.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="vchap"))
    assert inq(tgtd.url(iqn)).returncode == 0


def test_shared_tenant_account_survives_service_restart(tgtd, driver, tmp_path):
    chap = Chap("tenant2", "tenant2-secret-x")
    iqns = [PREFIX + "v-shared%d" % i for i in range(2)]
    for i, iqn in enumerate(iqns):
        path = tmp_path / ("s%d.img" % i)
        path.write_bytes(b"")
        os.truncate(path, MiB)
        driver.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=str(path), serial="s%d" % i, chap=chap))
    # a new service process: it cannot know the passwords tgtd holds, so it re-creates the
    # account once, which must keep the other target bound
    fresh = make_target_driver("tgt", control_port=tgtd.control, iqn_prefix=PREFIX)
    fresh.export(Export(initiators=ANY, iqn=iqns[0], lun=1, backing_path=str(tmp_path / "s0.img"), serial="s0", chap=chap))
    for iqn in iqns:
        assert inq(tgtd.url(iqn, "tenant2", "tenant2-secret-x")).returncode == 0
        assert inq(tgtd.url(iqn)).returncode != 0
    # unexport keeps the account while another target uses it, drops it with the last one
    fresh.unexport(iqns[0])
    assert "tenant2" in tgtd.tgtadm("--mode", "account", "--op", "show").stdout
    fresh.unexport(iqns[1])
    assert "tenant2" not in tgtd.tgtadm("--mode", "account", "--op", "show").stdout


def test_acl_by_initiator_name_and_address(tgtd, driver, volume):
    iqn = PREFIX + "v-acl"
    allowed = "iqn.2026-11.io.example:pve1"
    driver.export(Export(iqn=iqn, lun=1, backing_path=volume, serial="vacl", initiators=[allowed]))
    assert inq(tgtd.url(iqn), initiator=allowed).returncode == 0
    assert inq(tgtd.url(iqn), initiator="iqn.2026-11.io.example:intruder").returncode != 0
    driver.export(Export(iqn=iqn, lun=1, backing_path=volume, serial="vacl", initiators=["10.9.9.9"]))
    assert inq(tgtd.url(iqn), initiator=allowed).returncode != 0
    driver.export(Export(iqn=iqn, lun=1, backing_path=volume, serial="vacl", initiators=["127.0.0.1"]))
    assert inq(tgtd.url(iqn), initiator=allowed).returncode == 0
    assert driver.list_exports()[iqn].initiators == ["127.0.0.1"]


def test_readonly_export_refuses_writes(tgtd, driver, volume):
    iqn = PREFIX + "v-ro"
    driver.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="vro", readonly=True))
    assert qemu_io(tgtd.url(iqn), "write -P 1 0 4k").returncode != 0
    assert driver.list_exports()[iqn].readonly is True
    driver.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="vro"))
    assert qemu_io(tgtd.url(iqn), "write -P 1 0 4k").returncode == 0


def test_resize_seen_by_initiator(tgtd, driver, volume):
    iqn = PREFIX + "v-grow"
    driver.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="vgrow"))
    assert qemu_io(tgtd.url(iqn), "write -P 0x77 0 64k").returncode == 0
    assert capacity(tgtd.url(iqn)) == 64 * MiB
    os.truncate(volume, 96 * MiB)
    driver.refresh_size(iqn)
    assert capacity(tgtd.url(iqn)) == 96 * MiB
    res = qemu_io(tgtd.url(iqn), "read -P 0x77 0 64k", "write -P 0x78 95M 64k")
    assert res.returncode == 0 and "verification failed" not in res.stdout
    with pytest.raises(TargetError, match="not exported"):
        driver.refresh_size(PREFIX + "v-none")


def test_unexport_ends_export(tgtd, driver, volume):
    iqn = PREFIX + "v-gone"
    driver.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="vgone", chap=Chap("gone-user", "gone-secret-123")))
    driver.unexport(iqn)
    driver.unexport(iqn)  # idempotent
    assert iqn not in driver.list_exports()
    assert inq(tgtd.url(iqn, "gone-user", "gone-secret-123")).returncode != 0
    assert "gone-user" not in tgtd.tgtadm("--mode", "account", "--op", "show").stdout


def test_unexport_ends_an_active_session(tgtd, driver, volume):
    iqn = PREFIX + "v-busy"
    driver.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="vbusy"))
    client = subprocess.Popen(["qemu-io", "-f", "raw", "-c", "sleep 20000", tgtd.url(iqn)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for dummy in range(600):  # wait until tgtd shows the session
            shown = parse_show(tgtd.tgtadm("--mode", "target", "--op", "show").stdout)
            if any(t["iqn"] == iqn and t["sessions"] for t in shown):
                break
            time.sleep(0.05)
        else:
            pytest.fail("qemu-io never logged in")
        driver.unexport(iqn)  # a plain delete would fail: "this target is still active"
        assert iqn not in driver.list_exports()
        assert iqn not in tgtd.tgtadm("--mode", "target", "--op", "show").stdout
    finally:
        client.kill()
        client.wait()


def test_foreign_targets_are_left_alone_and_tid_clash_is_handled(tgtd, driver, volume):
    driver.export(Export(initiators=ANY, iqn=PREFIX + "v-a", lun=1, backing_path=volume, serial="va"))
    tid = max(t["tid"] for t in driver._state().values()) + 1
    # someone else (the iscsi_target module, tgt-admin) takes the next tid behind our back
    tgtd.tgtadm("--mode", "target", "--op", "new", "--tid", str(tid), "--targetname", "iqn.2001-04.com.example:foreign")
    try:
        driver.export(Export(initiators=ANY, iqn=PREFIX + "v-b", lun=1, backing_path=volume, serial="vb"))
        assert sorted(driver.list_exports()) == [PREFIX + "v-a", PREFIX + "v-b"]  # prefix filter
        assert inq(tgtd.url(PREFIX + "v-b")).returncode == 0
    finally:
        tgtd.tgtadm("--mode", "target", "--op", "delete", "--tid", str(tid))


def test_tgtd_restart_is_detected_and_exports_restored(tgtd, driver, volume):
    iqn = PREFIX + "v-restart"
    exp = Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="vrs", chap=Chap("rs-user", "rs-secret-12345"))
    driver.export(exp)
    assert qemu_io(tgtd.url(iqn, "rs-user", "rs-secret-12345"), "write -P 0x42 0 1M").returncode == 0
    tgtd.kill()
    assert driver.alive() is False
    with pytest.raises(TargetError):
        driver.export(exp)
    tgtd.start()
    assert driver.alive() is True
    assert driver.list_exports() == {}  # tgtd keeps nothing across a restart
    driver.export(exp)  # what the reconciler does
    res = qemu_io(tgtd.url(iqn, "rs-user", "rs-secret-12345"), "read -P 0x42 0 1M")
    assert res.returncode == 0 and "verification failed" not in res.stdout
    assert inq(tgtd.url(iqn)).returncode != 0  # CHAP restored too


def test_failed_export_leaves_nothing_behind(tgtd, driver, tmp_path):
    iqn = PREFIX + "v-broken"
    with pytest.raises(TargetError, match="export of .*v-broken failed"):
        driver.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=str(tmp_path / "missing.img"), serial="vbroken"))
    assert iqn not in tgtd.tgtadm("--mode", "target", "--op", "show").stdout
    path = tmp_path / "now.img"
    path.write_bytes(b"")
    os.truncate(path, 1024 * 1024)
    driver.export(Export(iqn=iqn, lun=1, backing_path=str(path), serial="vbroken", initiators=["127.0.0.1", "127.0.0.1"]))
    assert inq(tgtd.url(iqn)).returncode == 0


def test_bad_arguments():
    with pytest.raises(TargetError, match="bstype"):
        make_target_driver("tgt", bstype="sg")
    with pytest.raises(TargetError, match="unknown target driver"):
        make_target_driver("scst")
    with pytest.raises(TargetError, match="management must be socket or tgtadm"):
        make_target_driver("tgt", management="ipc")
    with pytest.raises(TargetError, match=r"unknown option\(s\) managment for target driver tgt \(known: .*management"):
        make_target_driver("tgt", managment="socket")
    drv = make_target_driver("tgt", control_port=1)
    with pytest.raises(TargetError, match="LUN 1"):
        drv.export(Export(initiators=ANY, iqn=PREFIX + "x", lun=0, backing_path="/x", serial="x"))


@pytest.fixture(scope="module")
def xfs_pool():
    from test_backends_file import _mount_xfs, _umount  # pylint: disable=import-outside-toplevel
    top, mnt = _mount_xfs()
    pool = make_backend("file", path=mnt)
    pool.check()
    yield pool
    _umount(top, mnt)


def test_snapshot_rollback_and_clone_seen_through_the_export(tgtd, driver, xfs_pool):
    """file backend + tgt together: a rollback rewrites the file tgtd holds open, and the
    initiator must read the snapshot's data at once (no stale cache in tgtd)."""
    vol, copy = "v-snap-" + driver.management, "v-clone-" + driver.management  # the pool lives per module
    iqn, clone_iqn = PREFIX + vol, PREFIX + copy
    path = xfs_pool.create(vol, 64 * MiB)
    driver.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=path, serial="vsnap"))
    url = tgtd.url(iqn)
    assert qemu_io(url, "write -P 0x11 0 1M", "write -P 0x12 32M 1M").returncode == 0
    xfs_pool.snapshot_create(vol, "s-1")
    assert qemu_io(url, "write -P 0x99 0 1M", "read -P 0x99 0 1M").returncode == 0
    xfs_pool.snapshot_rollback(vol, "s-1")  # while exported
    res = qemu_io(url, "read -P 0x11 0 1M", "read -P 0x12 32M 1M")
    assert res.returncode == 0 and "verification failed" not in res.stdout, res.stdout

    clone = xfs_pool.clone(vol, "s-1", copy)
    driver.export(Export(initiators=ANY, iqn=clone_iqn, lun=1, backing_path=clone, serial="vclone"))
    assert qemu_io(tgtd.url(clone_iqn), "write -P 0x77 0 1M").returncode == 0
    res = qemu_io(url, "read -P 0x11 0 1M")  # writes to the clone never reach its origin
    assert res.returncode == 0 and "verification failed" not in res.stdout
    res = qemu_io(tgtd.url(clone_iqn), "read -P 0x77 0 1M", "read -P 0x12 32M 1M")
    assert res.returncode == 0 and "verification failed" not in res.stdout


def test_lun_identity_is_the_volume_id_across_restart_and_resize(tgtd, driver, volume):
    """tgt's default SCSI ID (and so the WWID multipath groups paths by) comes from the tid; the
    driver sets the serial instead, so the WWID stays the volume's own."""
    iqn = PREFIX + "v-ident"
    exp = Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="0a1b2c3d4e5f6071")

    def identity():
        lun = parse_show(tgtd.tgtadm("--mode", "target", "--op", "show").stdout)
        lun = next(t for t in lun if t["iqn"] == iqn)["luns"][0]
        t10 = subprocess.run(["iscsi-inq", "-e", "1", "-c", "131", tgtd.url(iqn)], capture_output=True, text=True,
                             timeout=60, check=True).stdout  # VPD 0x83 as the initiator sees it
        return lun["scsi_id"], lun["serial"], "Designator:[0a1b2c3d4e5f6071]" in t10

    driver.export(exp)
    assert identity() == ("0a1b2c3d4e5f6071", "0a1b2c3d4e5f6071", True)
    assert driver.wwid("0a1b2c3d4e5f6071") == "360000000000000000a1b2c3d4e5f6071"
    with open(volume, "r+b") as f:
        f.truncate(128 * MiB)
    driver.refresh_size(iqn)  # re-creates the LUN
    assert identity() == ("0a1b2c3d4e5f6071", "0a1b2c3d4e5f6071", True)
    tgtd.kill()
    tgtd.start()
    assert driver.alive() is True
    driver.export(exp)  # what the reconciler does after a restart
    assert identity() == ("0a1b2c3d4e5f6071", "0a1b2c3d4e5f6071", True)


# The recorded tgtadm command lines (tests/unit/plugins/module_utils/fixtures/tgtd-socket/): run
# once through the tgtadm command against one real tgtd and once through the socket against
# another, both started fresh: the same exit codes and the same output, shows included.
RECORDING = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "unit", "plugins", "module_utils",
                         "fixtures", "tgtd-socket", "requests.json")


def test_socket_and_tgtadm_leave_tgtd_in_the_same_state(tmp_path):
    with open(RECORDING) as f:
        recording = json.load(f)
    backing = tmp_path / "lun.img"
    with open(backing, "wb") as f:
        f.truncate(16 * MiB)
    daemons = [Tgtd(), Tgtd()]
    for d in daemons:
        d.start()
    try:
        via_command = tgtlib.Tgtadm(daemons[0].control)
        via_socket = tgtlib.Tgtadm(daemons[1].control, run=tgtlib.TgtdSocket("/var/run/tgtd/socket.%d" % daemons[1].control))
        for record in recording["commands"]:
            args = [str(backing) if a == "/tmp/pvesan-tgtd-socket-lun.img" else a for a in record["argv"][5:]]
            answers = [t.cmd(*args, check=False) for t in (via_command, via_socket)]
            states = [t.cmd("--mode", "target", "--op", "show")[1] for t in (via_command, via_socket)]
            if args[:4] == ["--mode", "portal", "--op", "show"]:
                answers[1] = (answers[1][0], answers[1][1].replace(str(daemons[1].port), str(daemons[0].port)), answers[1][2])
            assert answers[0] == answers[1] and answers[0][0] == record["rc"], args
            assert states[0] == states[1], args  # the whole state after every step
    finally:
        for d in daemons:
            d.stop()


def test_socket_that_answers_differently_falls_back_to_tgtadm(tgtd, volume, monkeypatch, caplog):
    real = tgtlib.TgtdSocket.__call__

    def other_version(self, argv):
        rc, out, err = real(self, argv)
        return rc, out.replace("State: ready", "State: other"), err

    monkeypatch.setattr(tgtlib.TgtdSocket, "__call__", other_version)
    drv = make_target_driver("tgt", control_port=tgtd.control, iqn_prefix=PREFIX)
    with caplog.at_level(logging.WARNING):
        drv.export(Export(initiators=ANY, iqn=PREFIX + "v-fallback", lun=1, backing_path=volume, serial="fallback"))
    try:
        assert drv.tgt is drv.command
        assert "does not answer as tgtadm does" in caplog.text
        assert inq(tgtd.url(PREFIX + "v-fallback")).returncode == 0
    finally:
        drv.unexport(PREFIX + "v-fallback")


# --- write-through (the heads of an HA pair) ------------------------------------------------------
def backing_flags(tgtd, iqn):
    """What tgtd's own report (tgtadm --op show: "Backing store flags:") says of LUN 1 of ``iqn``."""
    lun = next(t for t in parse_show(tgtd.tgtadm("--mode", "target", "--op", "show").stdout) if t["iqn"] == iqn)["luns"][0]
    return lun["bsoflags"] or ""


def open_flags(tgtd, path):
    """The open(2) flags of tgtd's file descriptor on ``path`` (/proc/<pid>/fdinfo): what tgtd really asked for."""
    fds = "/proc/%d/fd" % tgtd.proc.pid
    for fd in os.listdir(fds):
        try:
            if os.readlink(os.path.join(fds, fd)) == path:
                with open("/proc/%d/fdinfo/%s" % (tgtd.proc.pid, fd)) as f:
                    return int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
        except OSError:
            continue
    raise AssertionError("tgtd has no descriptor on %s" % path)


@pytest.mark.parametrize("bsoflags, shown", [(None, "sync"), ("direct", "sync:direct")])
def test_write_through_export_opens_o_sync_and_round_trips_data(tgtd, xfs_pool, bsoflags, shown):
    """write_through: tgtd's report shows the flag, tgtd's descriptor on the volume (a sparse file
    on XFS, as in a file pool) is O_SYNC (with O_DIRECT when configured), and data written through
    the LUN reads back and is in the file."""
    drv = make_target_driver("tgt", control_port=tgtd.control, iqn_prefix=PREFIX, write_through=True, bsoflags=bsoflags)
    vol = "v-wt-%s" % (bsoflags or "sync")
    iqn = PREFIX + vol
    path = xfs_pool.create(vol, 64 * MiB)
    try:
        drv.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=path, serial="vwt"))
        assert backing_flags(tgtd, iqn) == shown
        assert "Backing store flags: %s\n" % shown in tgtd.tgtadm("--mode", "target", "--op", "show").stdout
        flags = open_flags(tgtd, path)
        assert flags & os.O_SYNC == os.O_SYNC  # O_SYNC includes O_DSYNC's bit
        assert bool(flags & os.O_DIRECT) == (bsoflags == "direct")
        res = qemu_io(tgtd.url(iqn), "write -P 0x3c 0 4k", "write -P 0x3d 40M 1M", "read -P 0x3c 0 4k", "read -P 0x3d 40M 1M")
        assert res.returncode == 0 and "verification failed" not in res.stdout, res.stdout + res.stderr
        with open(path, "rb") as f:
            f.seek(40 * MiB)
            assert f.read(MiB) == b"\x3d" * MiB
        assert drv.list_exports()[iqn].backing_path == path
    finally:
        drv.unexport(iqn)
        xfs_pool.delete(vol)


def test_default_export_has_no_flags(tgtd, driver, volume):
    iqn = PREFIX + "v-noflags"
    driver.export(Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="vnoflags"))
    assert backing_flags(tgtd, iqn) == ""
    assert open_flags(tgtd, volume) & os.O_SYNC == 0


def test_write_through_turned_on_leaves_live_luns_until_they_are_created_again(tgtd, volume, caplog):
    """The setting changed on a running host (service restarted with write_through): live LUNs are
    not re-created under their sessions (no tgtadm call; one warning per tgtd), a resize re-creates
    the LUN with the flag, and so does a fresh tgtd (a restart, or the other head after a failover)."""
    iqn = PREFIX + "v-wt-change"
    exp = Export(initiators=ANY, iqn=iqn, lun=1, backing_path=volume, serial="vwtchange")
    before = make_target_driver("tgt", control_port=tgtd.control, iqn_prefix=PREFIX)
    before.export(exp)
    assert backing_flags(tgtd, iqn) == ""
    after = make_target_driver("tgt", control_port=tgtd.control, iqn_prefix=PREFIX, write_through=True)
    try:
        after.list_exports()  # tgtd's state read, as the start-up reconcile does
        calls = []
        real = after.tgt._run
        after.tgt._run = lambda argv: calls.append(argv) or real(argv)
        with caplog.at_level(logging.WARNING):
            after.export(exp)
            after.export(exp)
        assert calls == []
        assert backing_flags(tgtd, iqn) == ""  # untouched
        warnings = [r for r in caplog.records if "backing-store flags" in r.getMessage()]
        assert len(warnings) == 1 and "'sync'" in warnings[0].getMessage()

        with open(volume, "r+b") as f:
            f.truncate(96 * MiB)
        after.refresh_size(iqn)  # re-creates the LUN anyway: with the flag now
        assert backing_flags(tgtd, iqn) == "sync" and capacity(tgtd.url(iqn)) == 96 * MiB

        tgtd.kill()
        tgtd.start()
        assert after.alive() is True
        after.export(exp)  # what the reconciler does on a fresh tgtd
        assert backing_flags(tgtd, iqn) == "sync"
        assert qemu_io(tgtd.url(iqn), "write -P 0x21 0 64k", "read -P 0x21 0 64k").returncode == 0
    finally:
        after.unexport(iqn)


def test_write_through_bad_arguments():
    with pytest.raises(TargetError, match="write_through must be true or false"):
        make_target_driver("tgt", write_through="yes")
    with pytest.raises(TargetError, match="write_through needs bstype rdwr"):
        make_target_driver("tgt", bstype="aio", write_through=True)
    with pytest.raises(TargetError, match="aio backing store takes no bsoflags"):
        make_target_driver("tgt", bstype="aio", bsoflags="direct")
    with pytest.raises(TargetError, match="joined by ':'"):
        make_target_driver("tgt", bsoflags="sync,direct")  # tgt itself would quietly read "sync"
    assert make_target_driver("tgt", bsoflags="direct:sync").bsoflags == "sync:direct"
    assert make_target_driver("tgt", bsoflags="direct", write_through=True).bsoflags == "sync:direct"
    assert make_target_driver("tgt", bsoflags="sync").bsoflags == "sync"
    assert make_target_driver("tgt").bsoflags is None
