# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Layout parsing and planning against the zpool output in fixtures/zfs_pool (see its README)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.pvesan.storage.plugins.module_utils._zfs_pool import (
    PoolError,
    Resolver,
    check_pool_name,
    layout_args,
    parse_get,
    parse_import_list,
    parse_status,
    plan,
    prop_value,
    wanted_layout,
)

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'zfs_pool')


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


def links_from_ls(*names):
    """Symlink table from recorded `ls -l /dev/disk/by-*` listings."""
    links = {}
    for name in names:
        directory = '/dev/disk/' + name.split('.')[0]
        for line in fixture(name).splitlines():
            if ' -> ' in line:
                left, target = line.split(' -> ')
                links[os.path.join(directory, left.split()[-1])] = target
    return links


RESOLVER = Resolver(links_from_ls('by-id.ls', 'by-path.ls'), sysfs='/nonexistent')  # hermetic: not this host's /sys
BYID = 'ata-WDC_WD40EFRX-68N32N0_WD-WCC7K0AAAAA%d'


def test_parse_raid10_with_all_classes():
    layout = parse_status(fixture('raid10.status'))
    assert [(v['class'], v['type'], v['disks']) for v in layout] == [
        ('data', 'mirror', ['/dev/sdb1', '/dev/sdc1']),
        ('data', 'mirror', ['/dev/sdd1', '/dev/sde1']),
        ('log', 'mirror', ['/dev/nvme0n1p1', '/dev/nvme1n1p1']),
        ('cache', 'disk', ['/dev/nvme0n1p2']),
        ('spare', 'disk', ['/dev/sdf1']),
    ]
    assert [v['name'] for v in layout[:3]] == ['mirror-0', 'mirror-1', 'mirror-2']


@pytest.mark.parametrize('name, expected', [
    ('stripe.status', [('data', 'disk', 1), ('data', 'disk', 1)]),
    ('raidz1.status', [('data', 'raidz1', 3)]),
    ('raidz2.status', [('data', 'raidz2', 4), ('special', 'mirror', 2), ('dedup', 'mirror', 2)]),
    ('raidz3.status', [('data', 'raidz3', 5)]),
    ('draid2.status', [('data', 'draid2:4d:11c:1s', 11)]),  # the distributed spare is not a spare vdev
    ('files.status', [('data', 'mirror', 2)]),
])
def test_parse_every_layout(name, expected):
    assert [(v['class'], v['type'], len(v['disks'])) for v in parse_status(fixture(name))] == expected


def test_resolver_follows_recorded_links():
    assert RESOLVER.resolve('/dev/disk/by-id/' + BYID % 1) == '/dev/sdb'
    assert RESOLVER.resolve(BYID % 1 + '-part1') == '/dev/sdb1'  # short by-id name, as zpool accepts
    assert RESOLVER.resolve('/dev/disk/by-path/pci-0000:00:17.0-ata-3') == '/dev/sdc'
    assert RESOLVER.resolve('sdd') == '/dev/sdd'
    assert RESOLVER.resolve('/var/lib/pvesan/zfs/disk0.img') == '/var/lib/pvesan/zfs/disk0.img'


def wanted_raid10(names):
    return wanted_layout(
        data=[{'type': 'mirror', 'disks': names[0:2]}, {'type': 'mirror', 'disks': names[2:4]}],
        log=[{'type': 'mirror', 'disks': ['/dev/disk/by-id/nvme-Samsung_SSD_980_PRO_1TB_S5GXNF0R000001-part1',
                                          '/dev/disk/by-id/nvme-Samsung_SSD_980_PRO_1TB_S5GXNF0R000002-part1']}],
        cache=['/dev/disk/by-id/nvme-Samsung_SSD_980_PRO_1TB_S5GXNF0R000001-part2'],
        spare=[names[4]])


@pytest.mark.parametrize('names', [
    ['/dev/disk/by-id/' + BYID % i for i in range(1, 6)],            # community.general #10744
    [BYID % i for i in range(1, 6)],                                 # short by-id names
    ['/dev/disk/by-path/pci-0000:00:17.0-ata-%d' % i for i in range(2, 6)] + ['/dev/sdf'],
    ['sdb', 'sdc', 'sdd', 'sde', 'sdf'],                             # community.general #10771
    ['/dev/sdc', '/dev/sdb', '/dev/sde', '/dev/sdd', '/dev/sdf'],    # another disk order in each mirror
])
def test_second_run_is_unchanged_however_disks_are_named(names):
    commands, removals, conflicts, _after = plan('tank', parse_status(fixture('raid10.status')),
                                                 wanted_raid10(names), RESOLVER)
    assert (commands, removals, conflicts) == ([], [], [])


def test_every_layout_matches_its_wanted_form():
    cases = [
        ('stripe.status', wanted_layout(data=[{'type': 'stripe', 'disks': ['sdb', 'sdc']}])),
        ('raidz1.status', wanted_layout(data=[{'type': 'raidz1', 'disks': ['sdb', 'sdc', 'sdd']}])),
        ('raidz2.status', wanted_layout(
            data=[{'type': 'raidz2', 'disks': ['sdb', 'sdc', 'sdd', 'sde']}],
            special=[{'type': 'mirror', 'disks': ['nvme0n1', 'nvme1n1']}],
            dedup=[{'type': 'mirror', 'disks': ['/dev/nvme2n1', '/dev/nvme3n1']}])),
        ('raidz3.status', wanted_layout(data=[{'type': 'raidz3', 'disks': ['sdb', 'sdc', 'sdd', 'sde', 'sdf']}])),
        ('draid2.status', wanted_layout(data=[{'type': 'draid2', 'draid_data': 4, 'draid_spares': 1,
                                               'disks': ['sd' + c for c in 'bcdefghijkl']}])),
        ('files.status', wanted_layout(data=[{'type': 'mirror', 'disks': ['/var/lib/pvesan/zfs/disk0.img',
                                                                          '/var/lib/pvesan/zfs/disk1.img']}])),
    ]
    for name, wanted in cases:
        assert plan('p', parse_status(fixture(name)), wanted, RESOLVER)[:3] == ([], [], []), name


def test_draid_defaults_and_command_words():
    layout = wanted_layout(data=[{'type': 'draid2', 'draid_spares': 1, 'disks': ['sd' + c for c in 'bcdefghijkl']}])
    assert layout[0]['type'] == 'draid2:8d:11c:1s'  # data defaults to min(8, 11 - 2 - 1)
    assert layout_args(layout)[0] == 'draid2:1s'     # only what the user asked for goes on the command line
    # 4 data disks were asked for but the pool has 8: a different layout.
    other = wanted_layout(data=[{'type': 'draid2', 'draid_spares': 1, 'disks': ['sd' + c for c in 'bcdefghijkl']}])
    assert plan('bulk', parse_status(fixture('draid2.status')), other, RESOLVER)[2]


def test_layout_args_orders_classes():
    layout = wanted_layout(data=[{'type': 'mirror', 'disks': ['a', 'b']}], log=[{'disks': ['l']}],
                           special=[{'type': 'mirror', 'disks': ['s1', 's2']}], cache=['c'], spare=['x'])
    assert layout_args(layout) == ['mirror', 'a', 'b', 'special', 'mirror', 's1', 's2', 'log', 'l', 'cache', 'c',
                                   'spare', 'x']


def test_plan_adds_attaches_and_reports_conflicts():
    current = parse_status(fixture('raid10.status'))
    data = [{'type': 'mirror', 'disks': ['sdb', 'sdc', 'sdg']}, {'type': 'mirror', 'disks': ['sdd', 'sde']},
            {'type': 'mirror', 'disks': ['sdh', 'sdi']}]
    commands, removals, conflicts, after = plan(
        'tank', [v for v in current if v['class'] == 'data'], wanted_layout(data=data), RESOLVER, ashift=12)
    assert commands == [['zpool', 'attach', 'tank', '/dev/sdb1', 'sdg'],
                        ['zpool', 'add', '-o', 'ashift=12', 'tank', 'mirror', 'sdh', 'sdi']]
    assert removals == [] and conflicts == []
    assert after[0]['disks'] == ['/dev/sdb1', '/dev/sdc1', 'sdg']
    # raidz1 of the same disks cannot be reached in place.
    _c, _r, conflicts, _a = plan('tank', current[:2], wanted_layout(
        data=[{'type': 'raidz1', 'disks': ['sdb', 'sdc', 'sdd']}]), RESOLVER)
    assert conflicts and 'already in the pool' in conflicts[0]


def test_wanted_layout_rejects_bad_requests():
    with pytest.raises(PoolError, match='at least 2'):
        wanted_layout(data=[{'type': 'mirror', 'disks': ['a']}])
    with pytest.raises(PoolError, match='raidz2 needs at least 3'):
        wanted_layout(data=[{'type': 'raidz2', 'disks': ['a', 'b']}])
    with pytest.raises(PoolError, match='listed twice'):
        wanted_layout(data=[{'disks': ['a']}], cache=['a'])
    with pytest.raises(PoolError, match='only be stripe or mirror'):
        wanted_layout(log=[{'type': 'raidz1', 'disks': ['a', 'b', 'c']}])
    with pytest.raises(PoolError, match='no data disks'):
        wanted_layout(data=[{'type': 'draid2', 'draid_spares': 1, 'disks': ['a', 'b', 'c']}])


@pytest.mark.parametrize('name', ['tank', 'Tank_1', 'a.b:c-d', 'my pool'])
def test_pool_names_allowed(name):
    check_pool_name(name)


@pytest.mark.parametrize('name', ['1tank', 'mirror0', 'raidz', 'draidpool', 'spares', 'log', 'a/b', '', 'tänk'])
def test_pool_names_refused(name):
    with pytest.raises(PoolError):
        check_pool_name(name)


def test_properties_and_import_list():
    assert parse_get(fixture('tank.zfs-get')) == {'atime': 'off', 'compression': 'lz4', 'recordsize': '131072'}
    assert prop_value('recordsize', '128K') == '131072'
    assert prop_value('autotrim', True) == 'on'
    assert parse_import_list(fixture('import.list')) == ['tank']


def fake_sysfs(root, tree):
    """A /sys/class/block stand-in: {device: {"partitions": [...], "holders": [...]}}."""
    for device, parts in tree.items():
        base = root / device
        (base / 'holders').mkdir(parents=True)
        for part in parts.get('partitions', []):
            (base / part).mkdir()
            (base / part / 'partition').write_text('1\n')
        for holder in parts.get('holders', []):
            (base / 'holders' / holder).mkdir()


def test_multipath_maps_match_their_kpartx_partitions(tmp_path):
    # /dev/mapper/mpatha -> ../dm-2; ZFS partitioned the map, kpartx made dm-4 (a holder of dm-2),
    # and `zpool status -P -L` reports /dev/dm-4.
    fake_sysfs(tmp_path, {'dm-2': {'holders': ['dm-4']}, 'dm-3': {'holders': ['dm-5']}})
    resolver = Resolver({'/dev/mapper/mpatha': '../dm-2', '/dev/mapper/mpathb': '../dm-3'}, sysfs=str(tmp_path))
    wanted = wanted_layout(data=[{'type': 'mirror', 'disks': ['/dev/mapper/mpatha', '/dev/mapper/mpathb']}])
    assert plan('san', parse_status(fixture('multipath.status')), wanted, resolver)[:3] == ([], [], [])
    # Without the holder relation the maps do not match: mirror-0 would look unwanted.
    _commands, removals, _conflicts, _after = plan('san', parse_status(fixture('multipath.status')), wanted, Resolver(
        {'/dev/mapper/mpatha': '../dm-2', '/dev/mapper/mpathb': '../dm-3'}, sysfs=str(tmp_path / 'none')))
    assert [v['name'] for v in removals] == ['mirror-0']


def test_partitions_found_in_sysfs(tmp_path):
    fake_sysfs(tmp_path, {'sdb': {'partitions': ['sdb1', 'sdb9']}, 'sdc': {'holders': ['dm-0']}})
    resolver = Resolver({}, sysfs=str(tmp_path))
    assert resolver.partitions('/dev/sdb') == {'/dev/sdb1', '/dev/sdb9'}
    assert resolver.partitions('/dev/sdc') == set()  # a multipath map over a path is not a partition of it
    assert resolver.same_disk('/dev/sdb', '/dev/sdb1') and not resolver.same_disk('/dev/sdb', '/dev/sdc1')
