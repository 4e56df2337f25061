# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The multipath module end to end on temp files, validated by the real multipath -t."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import subprocess

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.pvesan.storage.plugins.modules import multipath as mod


def usable():
    if os.geteuid() != 0 or not shutil.which('multipath') or not shutil.which('unshare'):
        return False
    return subprocess.run(['unshare', '--mount', 'true'], check=False).returncode == 0


pytestmark = pytest.mark.skipif(not usable(), reason='needs root, unshare and multipath-tools')

SITE = """# hand-written site settings
defaults {
\tpolling_interval 10
}
blacklist {
\tdevnode "^sda$"  # the boot disk
}
"""


def run(capsys, args, check=False, diff=True):
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            mod.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / 'multipath.conf'
    path.write_text(SITE)
    return path


def files(tmp_path, conf, **kw):
    return dict(path=str(conf), config_file=str(conf), wwids_file=str(tmp_path / 'wwids'), **kw)


def test_present_then_idempotent_and_unmanaged_kept(capsys, tmp_path, conf):
    args = files(tmp_path, conf, defaults={'user_friendly_names': True, 'find_multipaths': 'strict'},
                 devices=[{'vendor': 'LIO-ORG', 'product': '.*', 'prio': 'alua'}], wwids=['36001405aa'])
    res = run(capsys, args)
    assert res['changed'] and res['wwids_changed'] and not res['reloaded']
    text = conf.read_text()
    assert text.startswith('# hand-written site settings\n')
    assert 'devnode "^sda$"  # the boot disk' in text
    assert '\tuser_friendly_names "yes"' in text and '\t\tprio "alua"' in text
    assert [d['before_header'] for d in res['diff']] == [str(conf), str(tmp_path / 'wwids')]
    assert '/36001405aa/' in (tmp_path / 'wwids').read_text()
    again = run(capsys, args)
    assert not again['changed'] and 'diff' not in again
    assert conf.read_text() == text


def test_check_mode_predicts_without_writing(capsys, tmp_path, conf):
    res = run(capsys, files(tmp_path, conf, overrides={'no_path_retry': 'queue'}), check=True)
    assert res['changed']
    assert 'no_path_retry' in res['diff'][0]['after'] and res['diff'][0]['before'] == SITE
    assert conf.read_text() == SITE


def test_invalid_file_is_never_installed(capsys, tmp_path, conf):
    res = run(capsys, files(tmp_path, conf, defaults={'path_grouping_policy': 'notapolicy'}))
    assert res['failed']
    assert 'multipath -t rejects' in res['msg'] and 'invalid value for path_grouping_policy' in res['msg']
    assert str(conf) in res['msg']
    assert conf.read_text() == SITE
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith('.')] == []


def test_absent_removes_only_named_entries(capsys, tmp_path, conf):
    res = run(capsys, files(tmp_path, conf, state='absent', blacklist=[{'devnode': '^sda$'}],
                            defaults={'polling_interval': None}))
    assert res['changed']
    text = conf.read_text()
    assert 'devnode' not in text and 'polling_interval' not in text
    assert text.startswith('# hand-written site settings\n')


def test_dropin_created_and_validated_with_main(capsys, tmp_path, conf):
    dropin = tmp_path / 'conf.d' / 'pvesan.conf'
    args = dict(path=str(dropin), config_file=str(conf),
                devices=[{'vendor': 'IET', 'product': 'VIRTUAL-DISK', 'path_grouping_policy': 'multibus'}])
    res = run(capsys, args)
    assert res['changed'] and dropin.exists()
    assert oct(dropin.stat().st_mode & 0o777) == '0o644'
    assert not run(capsys, args)['changed']
    bad = run(capsys, dict(args, devices=[{'vendor': 'IET', 'product': 'VIRTUAL-DISK', 'bogus_setting': 1}]))
    assert bad['failed'] and str(dropin) in bad['msg']
