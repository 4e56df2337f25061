# -*- coding: utf-8 -*-
# Copyright (c) 2026, pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Parsing and command lines of plugins/module_utils/_tgt.py, on output recorded from a real
tgtd 1.0.85 (see fixtures/tgtadm/README.md).  The end-to-end run against a live tgtd is in
service/tests/test_targets_tgt.py."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type  # pylint: disable=invalid-name

import json
import os
import shutil
import socket
import struct
import tempfile
import threading

import pytest

from ansible_collections.pvesan.storage.plugins.module_utils import _tgt as tgtadm

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
                           "bsoflags": "direct", "block_size": 512, "type": "disk", "thin_provisioning": False}]
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


# --- tgtd's management socket, spoken without the tgtadm command --------------------------------
# fixtures/tgtd-socket/requests.json: every command line the Tgtadm methods use, run through the
# real tgtadm 1.0.85 against a real tgtd under strace (record.py there): the bytes tgtadm sent, the
# bytes tgtd answered, tgtadm's exit code and output; plus tgtadm's message for each error code.
with open(os.path.join(os.path.dirname(__file__), "fixtures", "tgtd-socket", "requests.json")) as _f:
    SOCKET_RECORDING = json.load(_f)


def _name(record):
    return " ".join(record["argv"][5:9] + ["rc%d" % record["rc"]])


class StandInTgtd(object):
    """A unix socket that answers one connection after another with the given bytes, keeping
    what it was sent: tgtd's side of the recording."""

    def __init__(self, answers):
        self.dir = tempfile.mkdtemp()  # short: unix socket paths are limited to 107 bytes
        self.path = os.path.join(self.dir, "socket")
        self.received = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(len(answers))
        self.thread = threading.Thread(target=self._serve, args=(list(answers),))
        self.thread.start()

    def _serve(self, answers):
        for answer in answers:
            conn = self.server.accept()[0]
            header = conn.recv(120, socket.MSG_WAITALL)
            length = struct.unpack("<I", header[72:76])[0]
            rest = conn.recv(length - 120, socket.MSG_WAITALL) if length > 120 else b""
            self.received.append(header + rest)
            conn.sendall(answer)
            conn.close()

    def close(self):
        self.thread.join(10)
        self.server.close()
        shutil.rmtree(self.dir)


@pytest.mark.parametrize("record", SOCKET_RECORDING["commands"], ids=_name)
def test_socket_sends_what_tgtadm_sends_and_answers_as_it_does(record):
    assert tgtadm.tgtd_request(record["argv"]) == bytes(bytearray.fromhex(record["request"]))
    tgtd = StandInTgtd([bytes(bytearray.fromhex(record["answer"]))])
    try:
        answer = tgtadm.TgtdSocket(tgtd.path)(record["argv"])
    finally:
        tgtd.close()
    assert tgtd.received == [bytes(bytearray.fromhex(record["request"]))]
    assert answer == (record["rc"], record["stdout"], record["stderr"])


def test_socket_error_messages_are_tgtadms():
    errors = SOCKET_RECORDING["errors"]
    tgtd = StandInTgtd([struct.pack("<II", e["err"], 8) for e in errors])
    run = tgtadm.TgtdSocket(tgtd.path)
    try:
        answers = [run(["tgtadm", "-C", "1", "--mode", "target", "--op", "delete", "--tid", "1"]) for dummy in errors]
    finally:
        tgtd.close()
    assert answers == [(e["rc"], "", e["stderr"]) for e in errors]


def test_socket_drives_the_same_tgtadm_methods():
    record = [r for r in SOCKET_RECORDING["commands"] if r["argv"][5:] == ["--mode", "target", "--op", "show"]][0]
    tgtd = StandInTgtd([bytes(bytearray.fromhex(record["answer"])), struct.pack("<II", 9, 8)])
    tgt = tgtadm.Tgtadm(91, run=tgtadm.TgtdSocket(tgtd.path))
    try:
        targets = tgtadm.read_targets(tgt)
        with pytest.raises(tgtadm.TgtadmError, match="target --op new --tid 2 --targetname iqn.x: this target already exists"):
            tgt.new_target(2, "iqn.x")
    finally:
        tgtd.close()
    assert list(targets) == ["iqn.2026-12.org.pvesan:rec.a"]


def test_socket_without_tgtd_says_what_tgtadm_says(tmp_path):
    assert tgtadm.TgtdSocket(str(tmp_path / "none"))(["tgtadm", "--mode", "system", "--op", "show"]) == (
        107, "", "tgtadm: failed to send request hdr to tgt daemon, Transport endpoint is not connected\n")


@pytest.mark.parametrize("argv", [
    ["tgtadm", "--mode", "session", "--op", "show"],
    ["tgtadm", "--mode", "target", "--op", "rename", "--tid", "1"],
    ["tgtadm", "--mode", "target", "--op", "show", "--tid"],
    ["tgtadm", "--mode", "target", "--op", "show", "--unknown", "1"],
])
def test_socket_refuses_what_it_does_not_know(argv):
    with pytest.raises(ValueError, match="tgtd socket"):
        tgtadm.tgtd_request(argv)
