# -*- coding: utf-8 -*-
# Copyright (c) 2026, pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Parsing and command lines of plugins/module_utils/tgtadm.py, on output recorded from a real
tgtd 1.0.85 (see fixtures/tgtadm/README.md).  The end-to-end run against a live tgtd is in
service/tests/test_targets_tgt.py."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type  # pylint: disable=invalid-name

import os

import pytest

from ansible_collections.pvesan.storage.plugins.module_utils import tgtadm

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "tgtadm")


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


class FakeRun(object):
    """Records argv; answers from a dict of (substring of the command line) -> (rc, out, err)."""

    def __init__(self, answers=None):
        self.calls = []
        self.answers = answers or {}

    def __call__(self, argv):
        self.calls.append(argv)
        line = " ".join(argv)
        for key, answer in self.answers.items():
            if key in line:
                if isinstance(answer, list):  # one-shot answers, then success
                    return answer.pop(0) if answer else (0, "", "")
                return answer
        return 0, "", ""

    def ops(self):
        return [" ".join(a[5:]) for a in self.calls]


def test_parse_show_recorded_output():
    targets = tgtadm.parse_show(fixture("show-targets.txt"))
    assert [(t["tid"], t["iqn"]) for t in targets] == [
        (1, "iqn.2026-11.io.pvesan:t1.v-0a1b"), (2, "iqn.2026-11.io.pvesan:t2.v-0c"), (5, "iqn.2001-04.com.example:handmade")]
    t1, t2, t5 = targets
    assert t1["luns"] == [{"lun": 1, "path": "/tmp/tgtrec/a.img", "serial": "v0a1b", "scsi_id": "IET     00010001",
                           "vendor": None, "product": None,
                           "readonly": True, "write_cache": None, "size": 134 * 10 ** 6, "bstype": "rdwr",
                           "bsoflags": "direct", "block_size": 512, "type": "disk"}]
    assert t1["initiators"] == ["127.0.0.1", "iqn.1993-08.org.debian:01:abc"] and not t1["allow_all"]
    assert t1["chap"] == {"user": "alice", "password": None}
    assert t1["mutual_chap"] == {"user": "tgtout", "password": None}
    assert t1["sessions"] == []
    assert t2["allow_all"] and t2["initiators"] == [] and t2["chap"] is None
    assert t2["luns"][0]["bstype"] == "aio" and t2["luns"][0]["bsoflags"] is None and t2["luns"][0]["serial"] == "beaf21"
    assert t2["sessions"] == [{"id": 4, "initiator": "iqn.2008-11.org.linux-kvm", "addresses": ["127.0.0.1"]}]
    assert t5["luns"] == [] and not t5["allow_all"]


def test_parse_empty_and_other_reads():
    assert tgtadm.parse_show("") == []
    run = FakeRun({"--mode portal": (0, fixture("show-portals.txt"), ""),
                   "--mode account": (0, fixture("show-accounts.txt"), ""),
                   "--tid 5": (0, fixture("show-target-params.txt"), ""),
                   "--mode target --op show": (0, fixture("show-targets.txt"), "")})
    tgt = tgtadm.Tgtadm(control_port=7, run=run)
    assert tgt.show_portals() == ["127.0.0.1:13260"]
    assert tgt.show_accounts() == ["tgtout", "alice"]
    params = tgtadm.read_target_attributes(tgt, 5)
    assert params["nop_interval"] == "5" and params["MaxRecvDataSegmentLength"] == "8192"
    assert sorted(tgtadm.read_targets(tgt)) == [
        "iqn.2001-04.com.example:handmade", "iqn.2026-11.io.pvesan:t1.v-0a1b", "iqn.2026-11.io.pvesan:t2.v-0c"]
    assert run.calls[0][:5] == ["tgtadm", "-C", "7", "--lld", "iscsi"]


def test_errors_carry_tgtadm_message_without_secrets():
    tgt = tgtadm.Tgtadm(run=FakeRun({"--op new": (22, "", "tgtadm: this target already exists\n")}))
    with pytest.raises(tgtadm.TgtadmError, match="this target already exists") as err:
        tgt.new_target(1, "iqn.x:y")
    assert err.value.rc == 22
    with pytest.raises(tgtadm.TgtadmError) as err:
        tgt.new_account("u", "s3cret-password")
    assert "s3cret" not in str(err.value) and "--password ********" in str(err.value)


def test_apply_new_target_commands():
    run = FakeRun()
    desired = {"iqn": "iqn.2026-11.io.pvesan:t.v-1", "tid": 3, "initiators": [],
               "luns": [{"lun": 1, "path": "/p/v-1.img", "serial": "v1", "vendor": "PVESAN", "product": "volume",
                         "readonly": False, "bstype": "aio", "bsoflags": "direct", "block_size": 4096, "write_cache": False}],
               "chap": {"user": "u", "password": "p" * 12}, "mutual_chap": {"user": "m", "password": "q" * 12},
               "attributes": {"nop_interval": 5}}
    changes = tgtadm.apply_target(tgtadm.Tgtadm(run=run), desired)
    assert run.ops() == [
        "--mode target --op new --tid 3 --targetname iqn.2026-11.io.pvesan:t.v-1",
        "--mode logicalunit --op new --tid 3 --lun 1 --backing-store /p/v-1.img --bstype aio --bsoflags direct --blocksize 4096",
        "--mode logicalunit --op update --tid 3 --lun 1 --params product_id=volume,readonly=0,scsi_sn=v1,vendor_id=PVESAN",
        "--mode logicalunit --op update --tid 3 --lun 1 --params " + tgtadm.WRITE_CACHE_OFF_MODE_PAGE,
        "--mode target --op bind --tid 3 --initiator-address ALL",
        "--mode account --op new --user u --password " + "p" * 12,
        "--mode account --op bind --tid 3 --user u",
        "--mode account --op new --user m --password " + "q" * 12,
        "--mode account --op bind --tid 3 --user m --outgoing",
        "--mode target --op update --tid 3 --name nop_interval --value 5",
    ]
    assert changes[0].startswith("target iqn.2026-11.io.pvesan:t.v-1 created")


def test_apply_is_idempotent_on_recorded_state():
    current = tgtadm.parse_show(fixture("show-targets.txt"))[0]
    desired = dict(current, luns=[dict(current["luns"][0])])
    run = FakeRun()
    assert tgtadm.apply_target(tgtadm.Tgtadm(run=run), desired, current) == []
    assert run.calls == []


def test_apply_updates_in_place():
    current = tgtadm.parse_show(fixture("show-targets.txt"))[0]
    desired = dict(current, luns=[dict(current["luns"][0], readonly=False)], initiators=["10.0.0.5"],
                   chap={"user": "bob", "password": "b" * 12}, mutual_chap=None)
    run = FakeRun({"--op new --user bob": [(22, "", "tgtadm: this account already exists\n")]})
    all_targets = {"other": {"iqn": "other", "tid": 9, "chap": {"user": "bob"}}}
    tgtadm.apply_target(tgtadm.Tgtadm(run=run), desired, current, all_targets=all_targets)
    assert run.ops() == [
        "--mode logicalunit --op update --tid 1 --lun 1 --params readonly=0,scsi_sn=v0a1b",
        "--mode target --op unbind --tid 1 --initiator-address 127.0.0.1",
        "--mode target --op unbind --tid 1 --initiator-name iqn.1993-08.org.debian:01:abc",
        "--mode target --op bind --tid 1 --initiator-address 10.0.0.5",
        "--mode account --op unbind --tid 1 --user alice",
        "--mode account --op new --user bob --password " + "b" * 12,
        "--mode account --op delete --user bob",
        "--mode account --op new --user bob --password " + "b" * 12,
        "--mode account --op bind --tid 9 --user bob",  # re-created account: re-bound elsewhere
        "--mode account --op bind --tid 1 --user bob",
        "--mode account --op unbind --tid 1 --user tgtout --outgoing",
    ]


def test_apply_moves_lun_to_new_path_and_acl_to_all():
    current = tgtadm.parse_show(fixture("show-targets.txt"))[0]
    desired = dict(current, luns=[dict(current["luns"][0], path="/new.img")], initiators=[])
    run = FakeRun()
    tgtadm.apply_target(tgtadm.Tgtadm(run=run), desired, current)
    ops = run.ops()
    assert ops[0] == "--mode logicalunit --op delete --tid 1 --lun 1"
    assert ops[1].startswith("--mode logicalunit --op new --tid 1 --lun 1 --backing-store /new.img --bstype rdwr --bsoflags direct")
    assert "--mode target --op bind --tid 1 --initiator-address ALL" in ops


def test_remove_refresh_and_tid():
    run = FakeRun()
    tgt = tgtadm.Tgtadm(run=run)
    current = tgtadm.parse_show(fixture("show-targets.txt"))[1]
    tgtadm.remove_target(tgt, current)
    tgtadm.refresh_lun(tgt, 2, current["luns"][0])
    assert run.ops() == [
        "--mode target --op delete --tid 2 --force",
        "--mode logicalunit --op delete --tid 2 --lun 1",
        "--mode logicalunit --op new --tid 2 --lun 1 --backing-store /tmp/tgtrec/b.img --bstype aio",
        "--mode logicalunit --op update --tid 2 --lun 1 --params readonly=0,scsi_sn=beaf21",
    ]
    assert tgtadm.next_free_tid([]) == 1 and tgtadm.next_free_tid([1, 5, 2]) == 6
    assert tgtadm.tgtd_identity(tgtadm.Tgtadm(control_port=65000)) is None


def test_lun_scsi_id_is_applied_and_read_back():
    run = FakeRun()
    desired = {"iqn": "iqn.2026-11.io.pvesan:t.v-2", "tid": 4, "initiators": [],
               "luns": [{"lun": 1, "path": "/p/v-2.img", "serial": "0a1b2c3d4e5f6071", "scsi_id": "0a1b2c3d4e5f6071",
                         "readonly": False}]}
    tgtadm.apply_target(tgtadm.Tgtadm(run=run), desired)
    assert "--mode logicalunit --op update --tid 4 --lun 1 --params readonly=0,scsi_id=0a1b2c3d4e5f6071,scsi_sn=0a1b2c3d4e5f6071" in run.ops()
    show = ("Target 4: iqn.2026-11.io.pvesan:t.v-2\n    LUN information:\n        LUN: 1\n"
            "            Type: disk\n            SCSI ID: 0a1b2c3d4e5f6071\n            SCSI SN: 0a1b2c3d4e5f6071\n")
    assert tgtadm.parse_show(show)[0]["luns"][0]["scsi_id"] == "0a1b2c3d4e5f6071"


def test_naa_wwid_matches_what_a_linux_initiator_saw():
    # Recorded in the kernel VM: a tgt LUN with tgt's default SCSI ID ("IET     " + tid 1 + LUN 1,
    # the T10 designator of sg_inq-vpd83.out) is the multipath map named in scsi_id.out.
    vm = os.path.join(os.path.dirname(__file__), '..', 'modules', 'fixtures', 'iscsi', 'kernel-vm')
    with open(os.path.join(vm, 'sg_inq-vpd83.out')) as f:
        assert 'vendor id: IET     \n      vendor specific: 00010001\n' in f.read()
    with open(os.path.join(vm, 'scsi_id.out')) as f:
        recorded = f.read().strip()
    assert tgtadm.naa_wwid("IET     00010001") == recorded == "360000000000000000e00000000010001"
    # the service's scsi_id (the volume id's hex digits) makes it unique to the volume
    assert tgtadm.naa_wwid("0a1b2c3d4e5f6071") == "360000000000000000a1b2c3d4e5f6071"
    assert tgtadm.naa_wwid("0a1b2c3d4e5f6071") != tgtadm.naa_wwid("0a1b2c3d4e5f6072")
