"""lvmthin backend against recorded lvm2 output (fixtures/backends/README.md): this kernel has no
device-mapper.  ``PVESAN_REAL_LVMTHIN=<vg>/<thinpool>`` runs ``test_real_lvmthin_scenario``
against real LVM instead (pending: needs a host with device-mapper, e.g. a Proxmox VE node)."""
import os

import pytest

from pvesan_service.backends import BackendError, NotFound, NotSupported, make_backend
from test_backends_zfs import Replay

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "backends", "lvmthin")
LVS = "lvs --reportformat json --units b --nosuffix -o lv_name,lv_size,data_percent,pool_lv,origin,lv_attr "
V1 = "v-0a1b2c3d4e5f6071"
V2 = "v-0c2d3e4f50617283"
S1 = "s-1111111111111111"
SNAP1 = "snap_%s_%s" % (V1, S1)


def out(name):
    with open(os.path.join(FIX, name)) as f:
        return f.read()


def backend(*script):
    runner = Replay(*script)
    return make_backend("lvmthin", runner=runner, vg="pve", thinpool="data"), runner


def test_check_and_capacity_from_pool_data_percent():
    b, r = backend((LVS + "pve/data", 0, out("lvs-pool.json")), (LVS + "pve/data", 0, out("lvs-pool.json")))
    b.check()
    cap = b.capacity()
    assert (cap.total, cap.used, cap.available) == (34359738368, 4294967296, 30064771072)
    r.done()


def test_check_missing_or_not_a_pool():
    b, dummy = backend((LVS + "pve/data", 5, "", out("lvs-missing-vg.err")))
    with pytest.raises(BackendError, match="lvcreate -T"):
        b.check()
    b, dummy = backend((LVS + "pve/data", 0, out("lvs-volume.json")))
    with pytest.raises(BackendError, match="not a thin pool"):
        b.check()


def test_create_idempotent_conflict_and_thick_refused():
    b, r = backend(("lvcreate -q -y -n %s -V 4294967296b -T pve/data" % V1, 0, out("lvcreate.out"), out("lvcreate-overcommit.err")),
                   ("lvcreate -q -y -n %s -V 4294967296b -T pve/data" % V1, 5, "", out("lvcreate-exists.err")),
                   (LVS + "pve/" + V1, 0, out("lvs-volume.json")),
                   ("vgs --noheadings --units b --nosuffix -o vg_extent_size pve", 0, out("vgs-extent.out")),
                   ("lvcreate -q -y -n %s -V 1073741824b -T pve/data" % V1, 5, "", out("lvcreate-exists.err")),
                   (LVS + "pve/" + V1, 0, out("lvs-volume.json")),
                   ("vgs --noheadings --units b --nosuffix -o vg_extent_size pve", 0, out("vgs-extent.out")))
    assert b.create(V1, 4 * 1024 ** 3) == "/dev/pve/" + V1
    assert b.create(V1, 4 * 1024 ** 3) == "/dev/pve/" + V1
    with pytest.raises(BackendError, match="already exists with 4294967296 bytes"):
        b.create(V1, 1024 ** 3)
    with pytest.raises(NotSupported, match="always thin"):
        b.create(V2, 1024 ** 3, thin=False)
    r.done()


def test_list_skips_snapshots_and_foreign_lvs_are_not_ours_by_name():
    b, r = backend((LVS + "pve", 0, out("lvs-vg.json")), (LVS + "pve", 0, out("lvs-vg.json")))
    # vm-100-disk-0 is a Proxmox LV in the same pool: listed (the core only claims v-<hex> names)
    assert b.list_volumes() == [V1, V2, "vm-100-disk-0"]
    assert b.list_snapshots(V1) == [S1]
    r.done()


def test_size_allocated_exists_resize():
    b, r = backend((LVS + "pve/" + V1, 0, out("lvs-volume.json")),
                   (LVS + "pve/" + V1, 0, out("lvs-volume.json")),
                   (LVS + "pve/v-ffffffffffffffff", 5, "", out("lvs-missing.err")),
                   (LVS + "pve/" + V1, 0, out("lvs-volume.json")),
                   ("lvextend -q -L 8589934592b pve/" + V1, 0),
                   (LVS + "pve/" + V1, 0, out("lvs-volume.json")))
    assert b.size(V1) == 4294967296
    assert b.allocated_bytes(V1) == 268435456  # 6.25 % of 4 GiB
    assert not b.exists("v-ffffffffffffffff")
    b.resize(V1, 8 * 1024 ** 3)
    with pytest.raises(BackendError, match="shrinking"):
        b.resize(V1, 1024 ** 3)
    r.done()


def test_snapshot_clone_rollback_delete():
    b, r = backend(("lvcreate -q -y -s -n %s pve/%s" % (SNAP1, V1), 0),
                   ("lvcreate -q -y -s -n %s pve/%s" % (SNAP1, V1), 5, "", out("lvcreate-exists.err")),
                   ("lvcreate -q -y -s -kn -ay -n %s pve/%s" % (V2, SNAP1), 0),
                   (LVS + "pve", 0, out("lvs-vg.json")),
                   ("lvremove -q -y pve/" + V1, 5, "", out("lvremove-in-use.err")),
                   (LVS + "pve", 0, out("lvs-vg.json")),
                   ("lvremove -q -y pve/" + V1, 0),
                   ("lvcreate -q -y -s -kn -ay -n %s pve/%s" % (V1, SNAP1), 0),
                   (LVS + "pve", 0, out("lvs-vg.json")),
                   ("lvremove -q -y pve/" + SNAP1, 0),
                   ("lvremove -q -y pve/" + V1, 0),
                   ("lvremove -q -y pve/" + SNAP1, 5, "", out("lvs-missing.err")))
    b.snapshot_create(V1, S1)
    with pytest.raises(BackendError, match="already exists"):
        b.snapshot_create(V1, S1)
    assert b.clone(V1, S1, V2) == "/dev/pve/" + V2
    assert b.rollback_needs_unexport
    with pytest.raises(BackendError, match="still exported"):
        b.snapshot_rollback(V1, S1)
    b.snapshot_rollback(V1, S1)
    b.delete(V1)  # its snapshots first
    b.snapshot_delete(V1, S1)  # idempotent
    r.done()


def test_rollback_to_missing_snapshot():
    b, dummy = backend((LVS + "pve", 0, out("lvs-vg.json")))
    with pytest.raises(NotFound):
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
