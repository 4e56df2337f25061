"""lio driver against an in-memory fake of rtslib-fb (fixtures/targets/fake_rtslib.py).

The run against a real kernel target (target_core_mod + iscsi_target_mod, configfs) with the
kernel initiator is test_targets_lio_kernel.py, in the kernel VM (this host's kernel has no LIO)."""
import os
import sys

import pytest

from pvesan_service.targets import Chap, Export, TargetError, make_target_driver

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures", "targets"))
import fake_rtslib  # noqa: E402  pylint: disable=wrong-import-position

ANY = ["ALL"]  # the ACL entry that lets any initiator in (an empty ACL lets none in)
PREFIX = "iqn.2026-11.io.pvesan:t1."


@pytest.fixture
def lio(monkeypatch, tmp_path):
    fake_rtslib.install(monkeypatch)
    configfs = tmp_path / "configfs"
    configfs.mkdir()
    return make_target_driver("lio", iqn_prefix=PREFIX, portals=["127.0.0.1:3260"], configfs=str(configfs))


@pytest.fixture
def vol(tmp_path):
    path = tmp_path / "v.img"
    path.write_bytes(b"")
    os.truncate(path, 1024 * 1024)
    return str(path)


def test_export_demo_mode_with_chap_and_read_back(lio, vol):
    exp = Export(initiators=ANY, iqn=PREFIX + "v-1", lun=1, backing_path=vol, serial="v1", chap=Chap("u", "pw-123456789", "m", "mpw-12345678"))
    lio.export(exp)
    lio.export(exp)  # idempotent
    target = fake_rtslib.STATE["targets"][PREFIX + "v-1"]
    tpg = next(target.tpgs)
    assert tpg.enable and tpg.get_attribute("generate_node_acls") == "1" and tpg.get_attribute("authentication") == "1"
    assert (tpg.chap_userid, tpg.chap_password, tpg.chap_mutual_userid) == ("u", "pw-123456789", "m")
    assert [(p.ip_address, p.port) for p in tpg.network_portals] == [("127.0.0.1", 3260)]
    assert [(lu.lun, lu.storage_object.plugin, lu.storage_object.wwn) for lu in tpg.luns] == [(1, "fileio", "v1")]
    seen = lio.list_exports()[PREFIX + "v-1"]
    assert (seen.backing_path, seen.serial, seen.lun, seen.initiators, seen.readonly) == (vol, "v1", 1, ANY, False)
    assert seen.chap == Chap("u", "pw-123456789", "m", "mpw-12345678")  # LIO reads passwords back
    assert len(fake_rtslib.STATE["storage"]) == 1


def test_acl_mode_readonly_and_update_in_place(lio, vol):
    iqn = PREFIX + "v-2"
    lio.export(Export(iqn=iqn, lun=1, backing_path=vol, serial="v2", initiators=["iqn.2026-11.io.example:pve1"],
                      chap=Chap("u", "pw-123456789"), readonly=True))
    tpg = next(fake_rtslib.STATE["targets"][iqn].tpgs)
    acl = next(tpg.node_acls)
    assert tpg.get_attribute("generate_node_acls") == "0" and tpg.chap_userid == ""
    assert (acl.node_wwn, acl.chap_userid, [m.write_protect for m in acl.mapped_luns]) == ("iqn.2026-11.io.example:pve1", "u", [True])
    assert lio.list_exports()[iqn].readonly is True
    lio.export(Export(iqn=iqn, lun=1, backing_path=vol, serial="v2", initiators=["iqn.2026-11.io.example:pve2"]))
    assert [a.node_wwn for a in tpg.node_acls] == ["iqn.2026-11.io.example:pve2"]
    assert [m.write_protect for m in next(tpg.node_acls).mapped_luns] == [False]
    assert tpg.get_attribute("authentication") == "0"
    with pytest.raises(TargetError, match="initiator names"):
        lio.export(Export(iqn=iqn, lun=1, backing_path=vol, serial="v2", initiators=["10.0.0.1"]))


def test_unexport_removes_target_and_storage_object(lio, vol):
    lio.export(Export(initiators=ANY, iqn=PREFIX + "v-3", lun=1, backing_path=vol, serial="v3"))
    lio.unexport(PREFIX + "v-3")
    lio.unexport(PREFIX + "v-3")
    assert fake_rtslib.STATE == {"targets": {}, "storage": {}}


def test_refresh_size_recreates_fileio_with_new_size(lio, vol):
    lio.export(Export(initiators=ANY, iqn=PREFIX + "v-4", lun=1, backing_path=vol, serial="v4", chap=Chap("u", "pw-123456789")))
    os.truncate(vol, 4 * 1024 * 1024)
    lio.refresh_size(PREFIX + "v-4")
    so = next(iter(fake_rtslib.STATE["storage"].values()))
    assert so.size == 4 * 1024 * 1024 and so.wwn == "v4"
    assert lio.list_exports()[PREFIX + "v-4"].chap.password == "pw-123456789"
    with pytest.raises(TargetError, match="does not exist"):
        lio.refresh_size(PREFIX + "nope")


def test_foreign_targets_filtered_and_alive(lio, vol, monkeypatch, tmp_path):
    fake_rtslib.Target(fake_rtslib.FabricModule("iscsi"), "iqn.2001-04.com.example:other", mode="create")
    lio.export(Export(initiators=ANY, iqn=PREFIX + "v-5", lun=1, backing_path=vol, serial="v5"))
    assert list(lio.list_exports()) == [PREFIX + "v-5"]
    assert lio.alive() is True
    assert make_target_driver("lio", configfs=str(tmp_path / "absent")).alive() is False
    with pytest.raises(TargetError, match="LUN 1"):
        lio.export(Export(initiators=ANY, iqn=PREFIX + "v-6", lun=0, backing_path=vol, serial="v6"))
    with pytest.raises(TargetError, match="backing store"):
        lio.export(Export(initiators=ANY, iqn=PREFIX + "v-7", lun=1, backing_path=str(tmp_path / "missing.img"), serial="v7"))
    assert PREFIX + "v-7" not in fake_rtslib.STATE["targets"]  # nothing half-made left


def test_missing_rtslib_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "rtslib_fb", None)  # import fails
    drv = make_target_driver("lio", configfs=str(tmp_path))
    with pytest.raises(TargetError, match="python3-rtslib-fb"):
        drv.list_exports()
    assert drv.alive() is False


def test_acl_mode_hides_the_target_from_other_initiators_in_discovery(lio, vol):
    """LIO lists a target in SendTargets to every initiator unless demo_mode_discovery is 0 (seen
    on the real kernel target: test_targets_lio_kernel.py); an empty ACL lets no initiator in."""
    iqn = PREFIX + "v-disc"
    lio.export(Export(iqn=iqn, lun=1, backing_path=vol, serial="vdisc", initiators=["iqn.2026-11.io.example:pve1"]))
    tpg = next(fake_rtslib.STATE["targets"][iqn].tpgs)
    assert tpg.get_attribute("demo_mode_discovery") == "0" and tpg.get_attribute("generate_node_acls") == "0"
    lio.export(Export(iqn=iqn, lun=1, backing_path=vol, serial="vdisc", initiators=[]))
    assert tpg.get_attribute("generate_node_acls") == "0" and list(tpg.node_acls) == []
    assert lio.list_exports()[iqn].initiators == []
    lio.export(Export(iqn=iqn, lun=1, backing_path=vol, serial="vdisc", initiators=ANY))
    assert tpg.get_attribute("demo_mode_discovery") == "1" and tpg.get_attribute("generate_node_acls") == "1"
    assert lio.acl_problem(["10.0.0.1"]) and not lio.acl_problem(["iqn.2026-11.io.example:pve1", "ALL"])


def test_write_through_fileio_is_not_write_back(monkeypatch, tmp_path, vol):
    """write_through: fileio storage objects with write_back=False (LIO then opens the file O_DSYNC).
    A live LUN keeps the mode it was created with (LIO fixes it at creation: changing it means a new
    storage object under the session); a resize, which creates the object again, takes the configured one."""
    fake_rtslib.install(monkeypatch)
    configfs = tmp_path / "configfs"
    configfs.mkdir()

    def driver(write_through):
        return make_target_driver("lio", iqn_prefix=PREFIX, configfs=str(configfs), write_through=write_through)

    def storage_object():
        objects = list(fake_rtslib.STATE["storage"].values())
        assert len(objects) == 1
        return objects[0]

    exp = Export(initiators=ANY, iqn=PREFIX + "v-wt", lun=1, backing_path=vol, serial="vwt")
    driver(False).export(exp)
    assert storage_object().write_back is True  # LIO's default, as before
    live = storage_object()
    driver(True).export(exp)  # the setting turned on, the service restarted: the live LUN is left alone
    assert storage_object() is live and live.write_back is True
    driver(True).refresh_size(PREFIX + "v-wt")
    assert storage_object() is not live and storage_object().write_back is False
    driver(True).unexport(PREFIX + "v-wt")

    driver(True).export(exp)
    assert storage_object().write_back is False
    driver(True).refresh_size(PREFIX + "v-wt")  # stays write-through
    assert storage_object().write_back is False and storage_object().wwn == "vwt"
    assert driver(True).list_exports()[PREFIX + "v-wt"].serial == "vwt"
    with pytest.raises(TargetError, match="write_through must be true or false"):
        make_target_driver("lio", write_through=1)
