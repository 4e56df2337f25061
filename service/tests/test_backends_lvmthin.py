"""lvmthin backend against lvm2 output RECORDED from lvm2 2.03.16 (Debian 12) on a real
device-mapper in the kernel VM: fixtures/backends/lvmthin (commands.tsv, versions.txt; see
fixtures/backends/README.md).  Every test replays recorded runs: the backend must run exactly the
recorded command and gets the real exit status, stdout and stderr.
``PVESAN_REAL_LVMTHIN=<vg>/<thinpool>`` runs ``test_real_lvmthin_scenario`` against real LVM instead;
`make kernel-vm-record SECTIONS=lvmthin` runs it in the kernel VM."""
import json
import os

import pytest

from pvesan_service.backends import BackendError, NotInPool, NotSupported, make_backend
from recorded import Recording
from test_backends_zfs import Replay

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "backends", "lvmthin")
REC = Recording(FIX)
V1 = "v-0a1b2c3d4e5f6071"
V2 = "v-0c2d3e4f50617283"
S1 = "s-1111111111111111"
GONE = "v-ffffffffffffffff"


def rec(*names):
    return [REC.step(n) for n in names]


def backend(*script, vg="pve", thinpool="data"):
    runner = Replay(*script)
    return make_backend("lvmthin", runner=runner, vg=vg, thinpool=thinpool), runner


def test_check_and_capacity_from_pool_data_percent():
    b, r = backend(*rec("lvs-pool", "lvs-pool"))
    b.check()
    cap = b.capacity()
    assert (cap.total, cap.used, cap.available) == (268435456, 16777216, 251658240)  # 6.25 % used
    r.done()


def test_check_missing_or_not_a_pool():
    for name, options in (("lvs-missing-pool", {}), ("lvs-missing-vg", {"vg": "nope"})):
        b, dummy = backend(*rec(name), **options)
        with pytest.raises(BackendError, match="lvcreate -T"):
            b.check()
    b, dummy = backend(*rec("lvs-not-pool"), thinpool="root")
    with pytest.raises(BackendError, match="not a thin pool"):
        b.check()


def test_create_idempotent_conflict_and_thick_refused():
    # lvcreate -q still prints the result and the thin pool warnings on stdout, the overcommit
    # warning on stderr, with exit status 0
    assert "WARNING: Sum of all thin volume sizes" in REC.err("lvcreate") and REC.rc("lvcreate") == 0
    b, r = backend(*rec("lvcreate", "lvcreate-exists", "lvs-volume", "vgs-extent",
                        # the same "already exists" answer when the LV has grown to 8 GiB since
                        "lvcreate-exists", "lvs-volume-grown", "vgs-extent"))
    assert b.create(V1, 4 * 1024 ** 3) == "/dev/pve/" + V1
    assert b.create(V1, 4 * 1024 ** 3) == "/dev/pve/" + V1
    with pytest.raises(BackendError, match="already exists with 8589934592 bytes, not 4294967296"):
        b.create(V1, 4 * 1024 ** 3)
    with pytest.raises(NotSupported, match="always thin"):
        b.create(V2, 1024 ** 3, thin=False)
    r.done()


def test_create_rounds_bytes_to_sectors():
    # lvm2 refuses a byte size that is not a multiple of 512 (recorded: rc 3)
    assert REC.rc("lvcreate-odd") == 3 and "Size is not a multiple of 512" in REC.err("lvcreate-odd")
    b, r = backend(*rec("lvcreate-odd-rounded"))
    assert b.create("v-0e0e0e0e0e0e0e0e", 1000000) == "/dev/pve/v-0e0e0e0e0e0e0e0e"
    r.done()
    assert '"lv_size":"4194304"' in REC.out("lvs-odd")  # and LVM rounds it up to one extent


def test_list_skips_snapshots_and_other_lvs():
    b, r = backend(*rec("lvs-vg", "lvs-vg"))
    # data (the pool) and root are not in the pool; the snapshot's name is no volume id
    assert b.list_volumes() == [V1, V2]
    assert b.list_snapshots(V1) == [S1]
    r.done()


def test_allocated_of_all_volumes_in_one_lvs():
    b, r = backend(*rec("lvs-vg"))
    rows = {row["lv_name"]: row for row in json.loads(REC.out("lvs-vg"))["report"][0]["lv"]}
    want = {v: int(int(rows[v]["lv_size"]) * float(rows[v]["data_percent"] or 0) / 100) for v in (V1, V2)}
    assert b.allocated_map([V1, V2, GONE]) == want  # the missing volume left out
    r.done()


def test_size_allocated_exists_resize():
    b, r = backend(*rec("lvs-volume", "lvs-volume", "lvs-missing", "lvs-volume", "lvextend", "lvs-volume-grown"))
    assert b.size(V1) == 4294967296
    assert b.allocated_bytes(V1) == int(4294967296 * 0.39 / 100)  # data_percent 0.39 after 16 MiB written
    assert not b.exists(GONE)
    b.resize(V1, 8 * 1024 ** 3)
    with pytest.raises(BackendError, match="shrinking"):
        b.resize(V1, 1024 ** 3)
    r.done()


def test_snapshot_clone_errors():
    b, r = backend(*rec("snapshot", "snapshot-exists", "snapshot-missing-volume",
                        "clone", "clone-exists", "clone-missing-snapshot"))
    b.snapshot_create(V1, S1)
    with pytest.raises(BackendError, match="already exists"):
        b.snapshot_create(V1, S1)
    # "Snapshot origin LV ... not found in Volume group pve." (before: an unexplained BackendError)
    with pytest.raises(NotInPool):
        b.snapshot_create(GONE, S1)
    assert b.clone(V1, S1, V2) == "/dev/pve/" + V2
    with pytest.raises(BackendError, match="volume %s already exists" % V2):
        b.clone(V1, S1, V2)
    with pytest.raises(NotInPool):
        b.clone(V1, "s-9999999999999999", "v-0d0d0d0d0d0d0d0d")
    r.done()


def test_rollback_and_delete():
    b, r = backend(*rec("lvs-vg", "lvremove-in-use",
                        "lvs-vg", "rollback-lvremove", "rollback-lvcreate",
                        "lvs-vg-after-rollback", "lvremove-snapshot", "lvremove",
                        "lvremove-missing", "lvs-vg-final", "lvremove-clone"))
    assert b.rollback_needs_unexport
    with pytest.raises(BackendError, match="still exported"):
        b.snapshot_rollback(V1, S1)
    b.snapshot_rollback(V1, S1)
    # after the rollback the snapshot's origin is empty and the volume's origin is the snapshot:
    # the snapshots are found by name, so delete still removes it first
    b.delete(V1)
    b.snapshot_delete(V1, S1)  # idempotent
    b.delete(V2)
    r.done()


def test_missing_vg_and_lv_on_remove_are_not_errors():
    b, r = backend(*rec("lvremove-missing"))
    b.snapshot_delete(V1, S1)
    r.done()
    assert "not found" in REC.err("lvremove-missing-vg")


def test_rollback_to_missing_snapshot():
    b, dummy = backend(*rec("lvs-vg"))
    with pytest.raises(NotInPool):
        b.snapshot_rollback(V1, "s-9999999999999999")


@pytest.mark.skipif(not os.environ.get("PVESAN_REAL_LVMTHIN"), reason="pending: set PVESAN_REAL_LVMTHIN=<vg>/<thinpool> on a host with device-mapper")
def test_real_lvmthin_scenario():
    vg, pool = os.environ["PVESAN_REAL_LVMTHIN"].split("/")
    b = make_backend("lvmthin", vg=vg, thinpool=pool)
    b.check()
    b.create(V1, 64 * 1024 ** 2)
    try:
        assert V1 in b.list_volumes()
        b.snapshot_create(V1, S1)
        b.clone(V1, S1, V2)
        assert b.list_snapshots(V1) == [S1] and os.path.exists(b.path(V2))
        b.resize(V1, 128 * 1024 ** 2)
        b.snapshot_rollback(V1, S1)
    finally:
        b.delete(V2)
        b.delete(V1)
