# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""iscsi_target / iscsi_target_info with backend=lio, on the in-memory rtslib-fb fake of the
service tests (service/tests/fixtures/targets/fake_rtslib.py). No kernel here has LIO
(target_core_mod/configfs); the shared module_utils run against a real kernel target in the kernel
VM (service/tests/test_targets_lio_kernel.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib.util
import json
import os

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.pvesan.storage.plugins.modules import iscsi_target as mod
from ansible_collections.pvesan.storage.plugins.modules import iscsi_target_info as info_mod

FAKE = os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', 'service', 'tests', 'fixtures', 'targets',
                    'fake_rtslib.py')
IQN = 'iqn.2026-11.io.pvesan:test.lio'


@pytest.fixture
def fake(monkeypatch):
    spec = importlib.util.spec_from_file_location('fake_rtslib', FAKE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install(monkeypatch)
    saves = []
    # rtslib-fb's RTSRoot.save_to_file() writes /etc/rtslib-fb-target/saveconfig.json; count the calls.
    monkeypatch.setattr(module.RTSRoot, 'save_to_file', lambda self, *a, **kw: saves.append(a), raising=False)
    module.saves = saves
    return module


@pytest.fixture
def disks(tmp_path):
    paths = []
    for name in ('a.img', 'b.img'):
        path = tmp_path / name
        path.write_bytes(b'\0' * 4096)
        paths.append(str(path))
    return paths


def run(capsys, module, args, check=False):
    with patch_module_args(dict(args, _ansible_check_mode=check, _ansible_diff=True)):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(capsys.readouterr().out)


def test_create_once_saved_once_then_idempotent(capsys, fake, disks):
    args = dict(iqn=IQN, backend='lio', portals=['127.0.0.1:3260'],
                luns=[{'path': disks[0], 'serial': 'lio0001'}, {'path': disks[1]}],
                chap={'user': 'pve', 'password': 'secret-in-0001'})
    res = run(capsys, mod, args, check=True)
    # check mode reports the library's own plan: the changes the real run makes
    planned = ['target %s created' % IQN, 'lun 1 created', 'lun 2 created', 'chap set for pve', 'portal 127.0.0.1:3260 added']
    assert res['changed'] and res['changes'] == planned
    assert fake.STATE['targets'] == {} and fake.saves == []

    res = run(capsys, mod, args)
    assert res['changed'] and res['changes'] == planned and len(fake.saves) == 1  # one save for the whole run
    assert [lun['lun'] for lun in res['target']['luns']] == [1, 2]
    assert res['target']['chap'] == {'user': 'pve'}  # never the password
    assert 'secret-in-0001' not in json.dumps(res)

    again = run(capsys, mod, args)
    assert not again['changed'] and again['changes'] == [] and len(fake.saves) == 1


def test_add_lun_and_acl_in_place(capsys, fake, disks):
    base = dict(iqn=IQN, backend='lio', luns=[{'path': disks[0], 'serial': 'lio0001'}])
    run(capsys, mod, base)
    target_object = fake.STATE['targets'][IQN]
    res = run(capsys, mod, dict(base, luns=base['luns'] + [{'path': disks[1], 'serial': 'lio0002'}],
                                initiators=['iqn.1993-08.org.debian:01:pve1']), check=True)
    assert res['changes'] == ['lun 2 created', 'initiator iqn.1993-08.org.debian:01:pve1 added']
    res = run(capsys, mod, dict(base, luns=base['luns'] + [{'path': disks[1], 'serial': 'lio0002'}],
                                initiators=['iqn.1993-08.org.debian:01:pve1']))
    assert 'lun 2 created' in res['changes'] and len(fake.saves) == 2
    assert fake.STATE['targets'][IQN] is target_object  # the target (and its sessions) was not re-created
    assert res['target']['initiators'] == ['iqn.1993-08.org.debian:01:pve1']


def test_addresses_are_refused_and_absent_removes(capsys, fake, disks):
    base = dict(iqn=IQN, backend='lio', luns=[{'path': disks[0], 'serial': 'lio0001'}])
    res = run(capsys, mod, dict(base, initiators=['192.0.2.1']))
    assert res['failed'] and 'initiator names' in res['msg']
    run(capsys, mod, base)
    info = run(capsys, info_mod, dict(backend='lio'))
    assert [t['iqn'] for t in info['targets']] == [IQN]
    assert run(capsys, mod, dict(base, state='absent'), check=True)['changed'] and IQN in fake.STATE['targets']
    res = run(capsys, mod, dict(base, state='absent'))
    assert res['changed'] and fake.STATE == {'targets': {}, 'storage': {}}
    assert not run(capsys, mod, dict(base, state='absent'))['changed']


def test_without_rtslib_says_what_to_install(capsys, monkeypatch, disks):
    monkeypatch.setitem(__import__('sys').modules, 'rtslib_fb', None)
    res = run(capsys, mod, dict(iqn=IQN, backend='lio', luns=[{'path': disks[0]}]))
    assert res['failed'] and 'python3-rtslib-fb' in res['msg']


def test_tpg_attributes_compared_and_changed(capsys, fake, disks):
    args = dict(iqn=IQN, backend='lio', luns=[{'path': disks[0], 'serial': 'lio0001'}],
                attributes={'login_timeout': 15})
    run(capsys, mod, args)
    assert not run(capsys, mod, args)['changed']
    res = run(capsys, mod, dict(args, attributes={'login_timeout': 20}), check=True)
    assert res['changes'] == ['attribute login_timeout=20']
    run(capsys, mod, dict(args, attributes={'login_timeout': 20}))
    tpg = list(fake.STATE['targets'][IQN].tpgs)[0]
    assert tpg.get_attribute('login_timeout') == '20'
