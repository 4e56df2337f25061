# -*- coding: utf-8 -*-
# Copyright (c) 2026, pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/_lio.py against the in-memory rtslib-fb fake of the service tests
(service/tests/fixtures/targets/fake_rtslib.py).  The real-kernel run (kernel VM) is
service/tests/test_targets_lio_kernel.py."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type  # pylint: disable=invalid-name

import importlib.util
import os
import sys

import pytest

from ansible_collections.pvesan.storage.plugins.module_utils import _lio as lio

FAKE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "service", "tests", "fixtures", "targets", "fake_rtslib.py")


@pytest.fixture
def fake(monkeypatch):
    spec = importlib.util.spec_from_file_location("fake_rtslib", FAKE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install(monkeypatch)
    return module


@pytest.fixture
def backing(tmp_path):
    path = tmp_path / "v.img"
    path.write_bytes(b"\0" * 4096)
    return str(path)


def desired(path, **kw):
    d = {"iqn": "iqn.2026-11.io.pvesan:t.v-1", "luns": [{"lun": 1, "path": path, "serial": "v1", "readonly": False}],
         "initiators": [], "chap": None, "mutual_chap": None, "portals": ["0.0.0.0:3260"]}
    d.update(kw)
    return d


def test_apply_read_idempotent_remove(fake, backing):
    assert lio.apply_target(desired(backing))[0] == "target iqn.2026-11.io.pvesan:t.v-1 created"
    assert lio.apply_target(desired(backing)) == []
    got = lio.read_target("iqn.2026-11.io.pvesan:t.v-1")
    assert got["luns"][0]["path"] == backing and got["luns"][0]["serial"] == "v1" and got["luns"][0]["backstore"] == "fileio"
    assert got["portals"] == ["0.0.0.0:3260"] and got["initiators"] == [] and got["chap"] is None
    assert list(lio.read_targets()) == ["iqn.2026-11.io.pvesan:t.v-1"]
    changes = lio.apply_target(desired(backing, chap={"user": "u", "password": "p" * 12}, initiators=["iqn.2026-11.x:a"]))
    assert changes == ["initiator iqn.2026-11.x:a added"]
    got = lio.read_target("iqn.2026-11.io.pvesan:t.v-1")
    assert got["chap"] == {"user": "u", "password": "p" * 12} and got["initiators"] == ["iqn.2026-11.x:a"]
    assert lio.remove_target("iqn.2026-11.io.pvesan:t.v-1") == ["target iqn.2026-11.io.pvesan:t.v-1 deleted"]
    assert lio.remove_target("iqn.2026-11.io.pvesan:t.v-1") == []
    assert fake.STATE == {"targets": {}, "storage": {}}


def test_addresses_refused(fake, backing):
    with pytest.raises(lio.LioError, match="initiator names"):
        lio.apply_target(desired(backing, initiators=["192.0.2.1"]))


def test_without_rtslib(monkeypatch):
    monkeypatch.setitem(sys.modules, "rtslib_fb", None)
    with pytest.raises(lio.LioError, match="python3-rtslib-fb"):
        lio.read_targets()
