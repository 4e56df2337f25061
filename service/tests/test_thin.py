"""Thin provisioning that gives space back, end to end: a real pvesan-service, a real tgtd, volumes
on a loop-mounted XFS, QEMU's libiscsi client and libiscsi's own conformance suite.

Thin service types export LUNs that take UNMAP and WRITE SAME with UNMAP (tgt's
``thin_provisioning``): a discard by the initiator punches a hole in the backing file, the pool's
usage drops, the LUN says so (READ CAPACITY(16) LBPME/LBPRZ, VPD B0/B2), and GET LBA STATUS lets
sparse-aware copies skip the holes.  Thick service types stay fully provisioned.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile

import pytest

from conftest import ADMIN_TOKEN, TEST_INITIATOR, MiB, image_opts, libiscsi_url, needs_e2e, qemu_io, wait_until

pytestmark = [pytest.mark.e2e, needs_e2e]

# libiscsi's tests of logical block provisioning (the families)
FAMILIES = "ALL.Unmap,ALL.WriteSame10,ALL.WriteSame16,ALL.GetLBAStatus,ALL.ReadCapacity16,ALL.Inquiry"


@pytest.fixture(scope="module")
def srv(server_factory):
    s = server_factory(extra={"service_types": [{"name": "gold", "pool_tags": ["ssd"], "default": True},
                                                {"name": "thick", "pool_tags": ["ssd"], "thin": False}],
                              "capacity_ttl": 0})
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tenant(srv):
    admin = srv.client(ADMIN_TOKEN)
    assert admin.post("/api/v1/tenants", json={"name": "thin", "initiators": [TEST_INITIATOR]}).status_code == 201
    return srv.client(admin.post("/api/v1/tokens", json={"name": "t", "tenant": "thin"}).json()["token"])


def allocated(srv, vol) -> int:
    return os.stat(os.path.join(srv.pool_path, vol["id"] + ".img")).st_blocks * 512


def provisioning(vol) -> dict:
    out = subprocess.run(["iscsi-readcapacity16", *libiscsi_url(vol)], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in re.findall(r"(LBPME|LBPRZ):(\d)", out)}


def vpd_pages(vol) -> str:
    return subprocess.run(["iscsi-inq", "-e", "1", "-c", "0", *libiscsi_url(vol)], capture_output=True, text=True,
                          check=True).stdout


def test_a_discard_gives_the_space_back(srv, tenant):
    vol = tenant.post("/api/v1/volumes", json={"name": "vm-200-disk-0", "size": "128M"}).json()
    assert vol["thin"] and vol["export"]["unmap"] and provisioning(vol) == {"LBPME": 1, "LBPRZ": 1}
    assert "0xb2 LOGICAL_BLOCK_PROVISIONING" in vpd_pages(vol) and "0xb0 BLOCK_LIMITS" in vpd_pages(vol)
    assert qemu_io(image_opts(vol), "write -P 0x5a 0 64M").returncode == 0
    full = allocated(srv, vol)
    assert full >= 64 * MiB
    assert tenant.get("/api/v1/volumes/vm-200-disk-0").json()["allocated"] == full
    # the guest discards 32 MiB (UNMAP), then zeroes 16 MiB with WRITE SAME and UNMAP
    r = qemu_io(image_opts(vol), "discard 0 32M", "write -z -u 32M 16M")
    assert r.returncode == 0, r.stderr
    assert allocated(srv, vol) <= full - 48 * MiB
    assert qemu_io(image_opts(vol), "read -P 0 0 48M", "read -P 0x5a 48M 16M").returncode == 0  # holes read as zeros
    assert tenant.get("/api/v1/volumes/vm-200-disk-0").json()["allocated"] == allocated(srv, vol)


def test_a_thick_volume_stays_fully_provisioned(srv, tenant):
    vol = tenant.post("/api/v1/volumes", json={"name": "vm-201-disk-0", "size": "32M", "service_type": "thick"}).json()
    assert vol["export"]["unmap"] is False
    assert not vol["thin"] and provisioning(vol) == {"LBPME": 0, "LBPRZ": 0}
    before = allocated(srv, vol)
    assert before >= 32 * MiB  # allocated up front
    qemu_io(image_opts(vol), "discard 0 16M")
    assert allocated(srv, vol) == before


def conformance(url_args):
    """iscsi-test-cu's provisioning families: {test: passed|failed|skipped}."""
    out = subprocess.run(["iscsi-test-cu", "--dataloss", "-v", "-t", FAMILIES, *url_args], capture_output=True, text=True,
                         timeout=600, check=False).stdout
    results, suite, test = {}, None, None
    for line in out.splitlines():
        m = re.match(r"^Suite: (\S+)", line)
        if m:
            suite = m.group(1)
        m = re.match(r"^  Test: (\S+) \.\.\.", line)
        if m:
            test = "%s.%s" % (suite, m.group(1))
            results[test] = "running"
        if test and "[SKIPPED]" in line:
            results[test] = "skipped"
        if test and re.search(r"(passed|FAILED)\s*$", line) and results[test] == "running":
            results[test] = "passed" if line.rstrip().endswith("passed") else "failed"
        if test and re.search(r"(passed|FAILED)\s*$", line) and results[test] == "skipped":
            test = None
    assert results, out
    return results


def tally(results: dict) -> str:
    failed = sorted(t for t, r in results.items() if r == "failed")
    return "%d passed, %d skipped, %d failed %s" % (sum(1 for r in results.values() if r == "passed"),
                                                    sum(1 for r in results.values() if r == "skipped"), len(failed), failed)


def test_libiscsi_provisioning_tests_pass_as_on_a_hand_made_thin_lun(srv, tenant, tgtd_daemon):
    vol = tenant.post("/api/v1/volumes", json={"name": "vm-202-disk-0", "size": "64M"}).json()
    # the same target, the same kind of file, tgt's thin provisioning set by hand
    fd, hand = tempfile.mkstemp(dir=srv.pool_path, suffix=".hand")
    os.ftruncate(fd, 64 * MiB)
    os.close(fd)
    iqn, tid = "iqn.2026-11.org.example:hand-thin", 900
    tg = tgtd_daemon.tgtadm
    tg("--mode", "target", "--op", "new", "--tid", str(tid), "--targetname", iqn)
    try:
        tg("--mode", "logicalunit", "--op", "new", "--tid", str(tid), "--lun", "1", "--backing-store", hand)
        tg("--mode", "logicalunit", "--op", "update", "--tid", str(tid), "--lun", "1", "--params", "thin_provisioning=1")
        tg("--mode", "target", "--op", "bind", "--tid", str(tid), "--initiator-address", "ALL")
        by_hand = conformance(["iscsi://127.0.0.1:%d/%s/1" % (tgtd_daemon.port, iqn)])
    finally:
        tg("--mode", "target", "--op", "delete", "--force", "--tid", str(tid), check=False)
        os.unlink(hand)
    service = conformance(libiscsi_url(vol))
    print("\niscsi-test-cu %s: service export %s; hand-made thin LUN %s" % (FAMILIES, tally(service), tally(by_hand)))
    assert [t for t, r in service.items() if r == "skipped"] == []
    assert set(service) == set(by_hand)
    assert {t for t, r in by_hand.items() if r == "passed"} <= {t for t, r in service.items() if r == "passed"}
    assert len([t for t, r in service.items() if r == "passed"]) >= 30


def test_a_sparse_copy_reads_only_the_data_and_is_byte_identical(srv, tenant, tgtd_daemon, tmp_path):
    vol = tenant.post("/api/v1/volumes", json={"name": "vm-203-disk-0", "size": "256M"}).json()
    assert qemu_io(image_opts(vol), "write -P 0x11 0 8M", "write -P 0x22 200M 8M").returncode == 0
    with open("/proc/%d/io" % tgtd_daemon.proc.pid) as f:
        before = int(re.search(r"^rchar: (\d+)", f.read(), re.M).group(1))
    copy = tmp_path / "copy.raw"
    secret = tmp_path / "secret"
    secret.write_text(vol["export"]["chap"]["password"])
    opts = image_opts(vol, chap=False) + ",user=%s,password-secret=sec" % vol["export"]["chap"]["user"]
    r = subprocess.run(["qemu-img", "convert", "--object", "secret,id=sec,file=%s" % secret, "--image-opts", opts,
                        "-O", "raw", str(copy)], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    with open("/proc/%d/io" % tgtd_daemon.proc.pid) as f:
        read = int(re.search(r"^rchar: (\d+)", f.read(), re.M).group(1)) - before
    assert read < 64 * MiB, read  # 16 MiB of data in 256: the holes were skipped, not read
    with open(copy, "rb") as a, open(os.path.join(srv.pool_path, vol["id"] + ".img"), "rb") as b:
        assert a.read() == b.read()
    assert os.stat(copy).st_blocks * 512 < 64 * MiB  # and the copy is sparse too


def test_an_existing_volume_gets_unmap_on_its_next_export(srv, tenant, tgtd_daemon):
    vol = tenant.post("/api/v1/volumes", json={"name": "vm-204-disk-0", "size": "16M"}).json()
    tid = next(line.split()[1].rstrip(":") for line in tgtd_daemon.tgtadm("--mode", "target", "--op", "show").stdout.splitlines()
               if line.startswith("Target ") and line.split()[2] == vol["export"]["iqn"])
    # as a release before thin provisioning exported it
    tgtd_daemon.tgtadm("--mode", "logicalunit", "--op", "update", "--tid", tid, "--lun", "1", "--params", "thin_provisioning=0")
    assert provisioning(vol)["LBPME"] == 0
    assert srv.client(ADMIN_TOKEN).post("/api/v1/reconcile").json()["exported"] >= 1
    wait_until(lambda: provisioning(vol)["LBPME"] == 1, what="thin provisioning after the re-export")


def test_reclaim_frees_the_zeros_a_guest_wrote_while_it_keeps_writing(srv, tenant):
    vol = tenant.post("/api/v1/volumes", json={"name": "vm-205-disk-0", "size": "128M"}).json()
    # data, then zeros written as data (a guest without discard, a restored backup)
    assert qemu_io(image_opts(vol), "write -P 0x33 0 16M", "write -P 0 16M 112M").returncode == 0
    full = allocated(srv, vol)
    assert full >= 128 * MiB
    # meanwhile the guest writes 4 KiB blocks into the zeros: 1,000 of them, 64 KiB apart
    writes = ["write -P 0x44 %d 4k" % (32 * MiB + i * 64 * 1024) for i in range(1000)]
    writer = subprocess.Popen(["qemu-io", "--image-opts", *[x for w in writes for x in ("-c", w)], image_opts(vol)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    r = srv.cli("volume", "reclaim", "vm-205-disk-0", token=tenant.headers["Authorization"][7:])
    assert writer.wait(timeout=120) == 0, writer.stderr.read()
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["reclaimed"] >= 64 * MiB and out["volume"]["allocated"] <= full - 64 * MiB
    # every byte as written: the data, the guest's blocks, zeros elsewhere
    checks = ["read -P 0x33 0 16M", "read -P 0 16M 16M"] + [
        "read -P 0x44 %d 4k" % (32 * MiB + i * 64 * 1024) for i in range(0, 1000, 97)] + [
        "read -P 0 %d 60k" % (32 * MiB + i * 64 * 1024 + 4096) for i in range(0, 1000, 97)]
    r = qemu_io(image_opts(vol), *checks)
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout
    # a second pass frees what the writer's chunks left, nothing is lost either
    srv.cli("volume", "reclaim", "vm-205-disk-0", token=tenant.headers["Authorization"][7:])
    assert allocated(srv, vol) <= 16 * MiB + 1000 * 64 * 1024
    assert tenant.get("/api/v1/volumes/vm-205-disk-0").json()["allocated"] == allocated(srv, vol)


def test_reclaim_of_a_thick_volume_is_refused(srv, tenant):
    tenant.post("/api/v1/volumes", json={"name": "vm-206-disk-0", "size": "8M", "service_type": "thick"})
    r = tenant.post("/api/v1/volumes/vm-206-disk-0/reclaim")
    assert r.status_code == 409 and "thick" in r.json()["detail"]


# What qemu-server 9.2.6 gives QEMU for a disk (src/PVE/QemuServer/Drive.pm detect_zeroes_cmdline_option,
# Blockdev.pm): with discard=on, discard=unmap and detect-zeroes=unmap; without it (the default),
# discard=ignore and detect-zeroes=on.
PROXMOX_DISK_OPTIONS = {"discard=on": ",discard=unmap,detect-zeroes=unmap",
                        "default": ",discard=ignore,detect-zeroes=on"}


@pytest.mark.parametrize("setting", sorted(PROXMOX_DISK_OPTIONS))
def test_proxmox_discard_on_turns_a_guest_writing_zeros_into_holes(srv, tenant, setting):
    """A guest overwriting 32 MiB of data with zeros (as `dd if=/dev/zero`, or a wiped file): with
    Proxmox's discard=on QEMU detects the zeros and unmaps them, so the pool gets the space back;
    with the defaults the zeros are written and stay allocated."""
    name = "vm-210-disk-%d" % sorted(PROXMOX_DISK_OPTIONS).index(setting)
    vol = tenant.post("/api/v1/volumes", json={"name": name, "size": "64M"}).json()
    opts = image_opts(vol) + PROXMOX_DISK_OPTIONS[setting]
    assert qemu_io(opts, "write -P 0x5a 0 32M").returncode == 0
    before = allocated(srv, vol)
    r = qemu_io(opts, "write -P 0 0 32M")
    assert r.returncode == 0, r.stderr
    after = allocated(srv, vol)
    print("\n%s: 32 MiB of zeros over data: allocated %d -> %d bytes" % (setting, before, after))
    if setting == "discard=on":
        assert after <= before - 31 * MiB  # (XFS may keep one block)
    else:
        assert after >= before
    assert qemu_io(opts, "read -P 0 0 32M").returncode == 0


@pytest.mark.parametrize("version, on_block_devices", [("1.0.85\n", False), ("1.0.90\n", True), ("1.0.97\n", True)])
def test_tgt_unmaps_block_devices_only_from_1_0_90(version, on_block_devices, caplog):
    """tgt before 1.0.90 punches holes in files only: UNMAP of a LUN on a zvol or LV fails there
    with HARDWARE ERROR (seen in the kernel VM with Debian 12's 1.0.85), so such LUNs are exported
    fully provisioned, with a warning that says what to do."""
    from pvesan_service.targets.tgt import TgtDriver
    asked = []

    def run(argv):
        asked.append(argv)
        return 0, version, ""
    drv = TgtDriver(run=run)
    assert drv.can_unmap("/srv/pool/v-1.img") is True and asked == []  # files: every tgt
    assert drv.can_unmap("/dev/zvol/tank/v-1") is on_block_devices and asked == [["tgtadm", "--version"]]
    assert drv.can_unmap("/dev/pve/v-2") is on_block_devices and len(asked) == 1  # asked once
    assert ("cannot unmap on block devices" in caplog.text) is not on_block_devices
