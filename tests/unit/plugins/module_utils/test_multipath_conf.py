# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The multipath.conf editor, and validation with the real multipath -t (skipped without it)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import subprocess

import pytest

from ansible_collections.pvesan.storage.plugins.module_utils._multipath_conf import (
    ConfError,
    apply,
    apply_wwids,
    parse,
    validate,
)

EXISTING = """# Site file, hand-written: keep me
defaults {
    user_friendly_names no   # inline comment
    polling_interval 10
}

blacklist {
    devnode "^sda$"
}

# vendor tuning
devices {
    device {
        vendor "NETAPP"
        product "LUN.*"
        path_grouping_policy group_by_prio
    }
}
"""


def run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def can_validate():
    if os.geteuid() != 0 or not shutil.which('multipath') or not shutil.which('unshare'):
        return False
    return run(['unshare', '--mount', 'true'])[0] == 0


needs_multipath = pytest.mark.skipif(not can_validate(), reason='needs root, unshare and multipath-tools')


def test_parse_tree():
    root = parse(EXISTING)
    assert [s.name for s in root.children] == ['defaults', 'blacklist', 'devices']
    dev = root.sections('devices')[0].sections('device')[0]
    assert dev.attr_value('vendor') == 'NETAPP'
    assert dev.attr_value('path_grouping_policy') == 'group_by_prio'


def test_parse_errors_name_the_line():
    with pytest.raises(ConfError, match='line 2'):
        parse('defaults {\n    device { vendor X }\n}\n')
    with pytest.raises(ConfError, match='never closed'):
        parse('defaults {\n  polling_interval 5\n')


def test_set_defaults_keeps_everything_else():
    new = apply(EXISTING, {'defaults': {'user_friendly_names': True, 'find_multipaths': 'strict'}})
    assert '# Site file, hand-written: keep me' in new
    assert '# vendor tuning' in new
    assert '    user_friendly_names "yes"' in new
    assert '    find_multipaths "strict"\n}' in new
    assert '    polling_interval 10' in new
    # Second run: nothing changes.
    assert apply(new, {'defaults': {'user_friendly_names': True, 'find_multipaths': 'strict'}}) == new


def test_unchanged_values_do_not_touch_lines():
    same = apply(EXISTING, {'defaults': {'polling_interval': 10, 'user_friendly_names': False}})
    assert same == EXISTING


def test_devices_add_update_remove():
    new = apply(EXISTING, {'devices': [
        {'vendor': 'LIO-ORG', 'product': '.*', 'prio': 'alua'},
        {'vendor': 'NETAPP', 'product': 'LUN.*', 'path_grouping_policy': 'multibus'},
    ]})
    devs = parse(new).sections('devices')[0].sections('device')
    assert [(d.attr_value('vendor'), d.attr_value('path_grouping_policy')) for d in devs] == [
        ('NETAPP', 'multibus'), ('LIO-ORG', None)]
    assert devs[1].attr_value('prio') == 'alua'
    gone = apply(new, {'devices': [{'vendor': 'NETAPP', 'product': 'LUN.*'}]}, state='absent')
    assert 'NETAPP' not in gone and 'LIO-ORG' in gone
    # per-entry state wins over the call's state
    both = apply(new, {'devices': [{'vendor': 'LIO-ORG', 'product': '.*', 'state': 'absent'}]})
    assert 'LIO-ORG' not in both


def test_blacklist_entries_and_new_sections():
    new = apply(EXISTING, {
        'blacklist': [{'devnode': '^sda$'}, {'wwid': '3600a0b8'}, {'device': {'vendor': 'QEMU', 'product': '.*'}}],
        'multipaths': [{'wwid': '36001405aa', 'alias': 'data'}],
        'overrides': {'no_path_retry': 'queue'},
    })
    bl = parse(new).sections('blacklist')[0]
    assert [a.value for a in bl.attrs('devnode')] == ['^sda$']
    assert bl.attr_value('wwid') == '3600a0b8'
    assert bl.sections('device')[0].attr_value('vendor') == 'QEMU'
    assert parse(new).sections('multipaths')[0].sections('multipath')[0].attr_value('alias') == 'data'
    assert 'overrides {\n    no_path_retry "queue"\n}\n' in new
    removed = apply(new, {'blacklist': [{'devnode': '^sda$'}], 'defaults': {'polling_interval': None}}, state='absent')
    assert 'devnode' not in removed and 'polling_interval' not in removed and 'wwid "3600a0b8"' in removed


def test_empty_file_gets_tab_indented_sections():
    new = apply('', {'defaults': {'find_multipaths': 'strict'}})
    assert new == 'defaults {\n\tfind_multipaths "strict"\n}\n'


def test_invalid_requests_say_what_to_fix():
    with pytest.raises(ConfError, match='vendor and product'):
        apply('', {'devices': [{'prio': 'alua'}]})
    with pytest.raises(ConfError, match='one of devnode'):
        apply('', {'blacklist': [{'bogus': 'x'}]})


def test_wwids_file():
    text = apply_wwids(None, ['3600a', '/3600b/'])
    assert text.startswith('# Multipath wwids, Version : 1.0\n')
    assert text.endswith('/3600a/\n/3600b/\n')
    assert apply_wwids(text, ['3600a']) == text
    assert '/3600a/' not in apply_wwids(text, ['3600a'], 'absent')


@needs_multipath
def test_real_multipath_accepts_valid_file(tmp_path):
    target = str(tmp_path / 'multipath.conf')
    host_file = os.path.exists('/etc/multipath.conf')
    errors, warnings, merged = validate(run, shutil.which('multipath'), shutil.which('unshare'),
                                        apply(EXISTING, {'defaults': {'find_multipaths': 'strict'}}), target, target)
    assert errors == [] and warnings == []
    # The merged configuration really contains our settings and the kept device entry.
    assert 'find_multipaths "strict"' in merged
    assert 'vendor "NETAPP"' in merged
    # The check ran in a throw-away namespace: the host's /etc is as it was.
    assert os.path.exists('/etc/multipath.conf') == host_file


@needs_multipath
def test_real_multipath_rejects_invalid_values(tmp_path):
    target = str(tmp_path / 'multipath.conf')
    errors, _warnings, _merged = validate(run, shutil.which('multipath'), shutil.which('unshare'),
                                          apply(EXISTING, {'defaults': {'path_grouping_policy': 'notapolicy',
                                                                        'bogus_keyword': 1}}), target, target)
    assert any('invalid value for path_grouping_policy' in e for e in errors)
    assert any('invalid keyword' in e and 'bogus_keyword' in e for e in errors)
    # Errors name the user's file, not the staged /etc path.
    assert all(target in e for e in errors)


@needs_multipath
def test_real_multipath_checks_dropin_with_its_main_file(tmp_path):
    main = str(tmp_path / 'multipath.conf')
    dropin = str(tmp_path / 'conf.d' / 'pvesan.conf')
    errors, _w, merged = validate(run, shutil.which('multipath'), shutil.which('unshare'),
                                  'devices {\n\tdevice {\n\t\tvendor "LIO-ORG"\n\t\tproduct ".*"\n\t\tprio "alua"\n\t}\n}\n',
                                  dropin, main, 'defaults {\n\tpolling_interval 7\n}\n')
    assert errors == []
    assert 'polling_interval 7' in merged and 'vendor "LIO-ORG"' in merged
    errors, _w, _m = validate(run, shutil.which('multipath'), shutil.which('unshare'),
                              'devices {\n\tdevice {\n\t\tvendor "X"\n\t\tprio_bogus 1\n\t}\n}\n', dropin, main, '')
    assert errors and dropin in errors[0]
