# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The zpool parser and planner against output RECORDED from real OpenZFS in the kernel VM
(fixtures/zfs_pool/kernel-vm, recorded by `make kernel-vm-record`; see its SOURCES.md).

Every command line is read from the recording's commands.tsv, so these tests also check that
the code builds exactly the command that was run."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.pvesan.storage.plugins.module_utils._zfs_pool import (
    Resolver,
    draid_arg,
    layout_args,
    parse_get,
    parse_import_list,
    parse_status,
    plan,
    prop_value,
    property_changes,
    remove_command,
    wanted_layout,
)
from ansible_collections.pvesan.storage.tests.unit.recorded import Recording

KVM = os.path.join(os.path.dirname(__file__), 'fixtures', 'zfs_pool', 'kernel-vm')


REC = Recording(KVM)
D = '/dev/disk/by-id/virtio-pvesan-d%d'


def links(name):
    """Symlink table from a recorded `ls -l /dev/disk/by-id`."""
    table = {}
    for line in REC.out(name).splitlines():
        if ' -> ' in line:
            left, target = line.split(' -> ')
            table['/dev/disk/by-id/' + left.split()[-1]] = target
    return table


# The guest's /dev/disk/by-id after the pools were made (whole disks and the -part1/-part9 ZFS
# made). sysfs is not replayed: whole disk -> partition 1 is what zpool reports here.
LINKS = links('by-id-after.ls')
LINKS.update(links('parts.by-id.ls'))  # after a GPT of two partitions on d3 (vdd)
HOST = Resolver(LINKS, sysfs='/nonexistent')


def status(tag):
    """The layout the module reads: zpool status -P -L, with the paths of zpool status -P."""
    name = tag + '.status'
    assert REC.argv(name)[:4] == ['zpool', 'status', '-P', '-L'] and REC.rc(name) == 0
    assert REC.argv(name + '-paths') == ['zpool', 'status', '-P', REC.argv(name)[-1]]
    return parse_status(REC.out(name), REC.out(name + '-paths'))


def shape(layout):
    return [(v['class'], v['type'], v['disks']) for v in layout]


def unchanged(current, wanted, resolver=HOST):
    return plan('p', current, wanted, resolver)[:3] == ([], [], [])


def created_with(name):
    """The vdev words of a recorded `zpool create [opts] POOL vdevs...`."""
    argv = REC.argv(name)
    assert argv[:2] == ['zpool', 'create'] and REC.rc(name) == 0, (argv, REC.err(name))
    i = 2
    while argv[i].startswith('-'):
        i += 1 if argv[i] == '-f' else 2
    return argv[i], argv[i + 1:]


def vd(*letters):
    return ['/dev/vd%s1' % c for c in letters]


# --- parse: every layout the module supports, as OpenZFS 2.1.11 prints it with -P -L ---------
@pytest.mark.parametrize('tag, expected', [
    ('stripe', [('data', 'disk', vd('b')), ('data', 'disk', vd('c'))]),
    ('tank', [('data', 'mirror', vd('b', 'c')), ('data', 'mirror', vd('d', 'e')), ('log', 'mirror', vd('f', 'g')),
              ('cache', 'disk', vd('h')), ('spare', 'disk', vd('i'))]),
    ('raidz1', [('data', 'raidz1', vd('b', 'c', 'd'))]),
    # zpool prints the dedup class before special
    ('raidz2', [('data', 'raidz2', vd('b', 'c', 'd', 'e')), ('dedup', 'mirror', vd('h', 'i')),
                ('special', 'mirror', vd('f', 'g'))]),
    ('raidz3', [('data', 'raidz3', vd('b', 'c', 'd', 'e', 'f'))]),
    ('draid2', [('data', 'draid2:4d:11c:1s', vd(*'bcdefghijkl'))]),  # its distributed spare is no spare vdev
    ('draid1-defaults', [('data', 'draid1:4d:5c:0s', vd(*'bcdef'))]),
    ('draid1-spare', [('data', 'draid1:3d:6c:2s', vd(*'bcdefg'))]),
    ('draid3', [('data', 'draid3:2d:6c:0s', vd(*'bcdefg'))]),
    ('files', [('data', 'mirror', ['/var/tmp/pvesan-zfs/disk0.img', '/var/tmp/pvesan-zfs/disk1.img'])]),
    ('loop', [('data', 'disk', ['/dev/loop0'])]),  # no partition on a loop device
    ('parts', [('data', 'mirror', vd('b', 'c')), ('log', 'disk', ['/dev/vdd1']), ('cache', 'disk', ['/dev/vdd2'])]),
    ('stripe-attached', [('data', 'mirror', vd('b', 'f')), ('data', 'disk', vd('c')), ('data', 'disk', vd('d'))]),
    ('tank-removed', [('data', 'mirror', vd('b', 'c')), ('data', 'mirror', vd('d', 'e')), ('spare', 'disk', vd('i')),
                      ('data', 'mirror', vd('j', 'k'))]),
])
def test_recorded_layouts(tag, expected):
    assert sorted(shape(status(tag))) == sorted(expected)


def test_vdev_names_keep_their_index_after_a_removal():
    assert [v['name'] for v in status('tank-removed') if v['type'] == 'mirror'] == ['mirror-0', 'mirror-1', 'mirror-3']
    assert status('tank-imported') == status('tank-removed')


# --- the wanted layout builds the vdev words that were run -----------------------------------
def by_id(*numbers):
    return [D % n for n in numbers]


@pytest.mark.parametrize('create, wanted', [
    ('stripe.create', dict(data=[{'disks': by_id(1, 2)}])),
    ('tank.create', dict(data=[{'type': 'mirror', 'disks': by_id(1, 2)}, {'type': 'mirror', 'disks': by_id(3, 4)}],
                         log=[{'type': 'mirror', 'disks': by_id(5, 6)}], cache=by_id(7), spare=by_id(8))),
    ('rz1.create', dict(data=[{'type': 'raidz1', 'disks': ['vdb', 'vdc', 'vdd']}])),
    ('rz2.create-f', dict(data=[{'type': 'raidz2', 'disks': by_id(1, 2, 3, 4)}], special=[{'type': 'mirror', 'disks': by_id(5, 6)}],
                          dedup=[{'type': 'mirror', 'disks': by_id(7, 8)}])),
    ('rz3.create', dict(data=[{'type': 'raidz3', 'disks': by_id(1, 2, 3, 4, 5)}])),
    ('draid2.create', dict(data=[{'type': 'draid2', 'draid_data': 4, 'draid_children': 11, 'draid_spares': 1,
                                  'disks': by_id(*range(1, 12))}])),
    ('draid1-defaults.create', dict(data=[{'type': 'draid1', 'disks': by_id(1, 2, 3, 4, 5)}])),
    ('draid1-spare.create', dict(data=[{'type': 'draid1', 'draid_spares': 2, 'disks': by_id(*range(1, 7))}])),
    ('draid3.create', dict(data=[{'type': 'draid3', 'draid_data': 2, 'disks': by_id(*range(1, 7))}])),
    ('parts.create', dict(data=[{'type': 'mirror', 'disks': by_id(1, 2)}], log=[{'disks': [D % 3 + '-part1']}],
                          cache=[D % 3 + '-part2'])),
])
def test_create_words_and_second_run_unchanged(create, wanted):
    """The layout the module would create is the one run, and what zpool reports for it is
    the same layout: a second run changes nothing (by-id names, short names, partitions)."""
    pool, words = created_with(create)
    layout = wanted_layout(**wanted)
    assert layout_args(layout) == words
    tag = {'rz1': 'raidz1', 'rz2': 'raidz2', 'rz3': 'raidz3'}.get(create.split('.')[0], create.split('.')[0])
    current = status(tag)
    assert unchanged(current, layout), (pool, shape(current))
    # the type zpool reports for a dRAID is the one the module computes from its defaults
    for want, have in zip([v for v in layout if v['class'] == 'data'], [v for v in current if v['class'] == 'data']):
        assert want['type'] == have['type']


def test_draid_word_is_what_the_user_asked_for():
    assert draid_arg({'type': 'draid1', 'disks': by_id(1, 2, 3)}) == 'draid1'
    assert draid_arg({'type': 'draid1', 'draid_spares': 2}) == 'draid1:2s'
    assert draid_arg({'type': 'draid3', 'draid_data': 2}) == 'draid3:2d'


def test_by_id_short_and_kernel_names_are_the_same_pool():
    current = status('tank')
    for name in (lambda n: D % n, lambda n: 'virtio-pvesan-d%d' % n, lambda n: '/dev/vd' + 'abcdefghijklm'[n]):
        wanted = wanted_layout(data=[{'type': 'mirror', 'disks': [name(1), name(2)]}, {'type': 'mirror', 'disks': [name(3), name(4)]}],
                               log=[{'type': 'mirror', 'disks': [name(5), name(6)]}], cache=[name(7)], spare=[name(8)])
        assert unchanged(current, wanted), name(1)
    # a disk the pool does not have is added, and only that
    more = wanted_layout(data=[{'type': 'mirror', 'disks': by_id(1, 2)}, {'type': 'mirror', 'disks': by_id(3, 4)},
                               {'type': 'mirror', 'disks': by_id(9, 10)}])
    commands, removals, conflicts, _after = plan('tank', [v for v in current if v['class'] == 'data'], more, HOST, ashift=12)
    assert (commands, removals, conflicts) == ([REC.argv('tank.add-mirror')], [], [])
    assert unchanged(status('tank-added'), wanted_layout(
        data=[{'type': 'mirror', 'disks': by_id(1, 2)}, {'type': 'mirror', 'disks': by_id(3, 4)}, {'type': 'mirror', 'disks': by_id(9, 10)}],
        log=[{'type': 'mirror', 'disks': by_id(5, 6)}], cache=by_id(7), spare=by_id(8)))


def test_attach_and_remove_commands_are_the_recorded_ones():
    wanted = wanted_layout(data=[{'type': 'mirror', 'disks': by_id(1, 5)}, {'disks': by_id(2)}])
    commands, removals, conflicts, _after = plan('stripe', status('stripe'), wanted, HOST)
    assert (commands, removals, conflicts) == ([REC.argv('stripe.attach')], [], [])
    # after zpool add vdd and the attach: vdd is not wanted any more
    commands, removals, conflicts, _after = plan('stripe', status('stripe-attached'), wanted, HOST)
    assert (commands, conflicts) == ([], [])
    assert [remove_command('stripe', v) for v in removals] == [REC.argv('stripe.remove')]
    assert unchanged(status('stripe-removed'), wanted)
    # a log mirror is removed by its name, a cache device by its device
    tank = status('tank-added')
    log, cache = [v for v in tank if v['class'] == 'log'][0], [v for v in tank if v['class'] == 'cache'][0]
    assert remove_command('tank', cache) == REC.argv('tank.remove-cache')
    assert remove_command('tank', log) == REC.argv('tank.remove-log')
    assert REC.rc('tank.remove-cache') == 0 and REC.rc('tank.remove-log') == 0


def test_mismatched_replication_needs_force():
    assert REC.rc('rz2.create') == 1
    assert 'mismatched replication level' in REC.err('rz2.create') and "use '-f'" in REC.err('rz2.create')
    assert REC.argv('rz2.create-f')[2] == '-f'


# --- properties, list, import ----------------------------------------------------------------
def test_property_gets():
    assert REC.argv('tank.zpool-get') == ['zpool', 'get', '-H', '-p', 'ashift,autotrim', 'tank']
    assert parse_get(REC.out('tank.zpool-get')) == {'ashift': '12', 'autotrim': 'on'}
    assert parse_get(REC.out('tank.zfs-get')) == {'atime': 'off', 'compression': 'lz4', 'recordsize': '131072'}
    assert parse_get(REC.out('tank.zfs-get-xattr')) == {'atime': 'off', 'compression': 'lz4', 'xattr': 'sa'}
    # an unset comment is a dash, also with -p
    assert parse_get(REC.out('tank.zpool-get-comment')) == {'autoexpand': 'off', 'comment': '-', 'failmode': 'wait'}
    assert property_changes({'ashift': '12', 'autotrim': prop_value('autotrim', True)}, parse_get(REC.out('tank.zpool-get'))) == {}
    # recordsize as the user writes it (1M) matches what zfs reports after the set
    assert property_changes({'recordsize': '1M'}, parse_get(REC.out('tank.zfs-get'))) == {'recordsize': '1048576'}
    assert REC.argv('tank.set-recordsize') == ['zfs', 'set', 'recordsize=1048576', 'tank']
    assert property_changes({'recordsize': '1M'}, parse_get(REC.out('tank.zfs-get-set'))) == {}


def test_zpool_list():
    assert REC.answer('tank.list-name') == (0, 'tank\n', '')
    assert REC.answer('list-missing') == (1, '', "cannot open 'tank': no such pool\n")
    assert REC.answer('tank.list-exported') == (1, '', "cannot open 'tank': no such pool\n")
    fields = REC.out('tank.zpool-list').rstrip('\n').split('\t')
    assert fields[0] == 'tank' and fields[4] == 'ONLINE' and int(fields[1]) == int(fields[2]) + int(fields[3])


def test_import_lists():
    assert parse_import_list(REC.out('tank.import-list')) == ['tank']
    assert parse_import_list(REC.out('files.import-list-d')) == ['lab']
    assert REC.argv('files.import-list-d') == ['zpool', 'import', '-d', '/var/tmp/pvesan-zfs']
    # nothing to import: exit status 0, the message on stderr
    assert REC.answer('import-none') == (0, '', 'no pools available to import\n')
    assert parse_import_list(REC.out('import-none')) == []


def test_single_disks_come_before_a_mirror():
    """zpool reads `mirror a b c` as one 3-way mirror: the kernel-VM module run of
    [mirror d1 d5, d2] once created exactly that (`zpool create stripe mirror d1 d5 d2`)."""
    layout = wanted_layout(data=[{'type': 'mirror', 'disks': by_id(1, 5)}, {'disks': by_id(2)}],
                           log=[{'type': 'mirror', 'disks': by_id(3, 4)}, {'disks': by_id(6)}])
    assert layout_args(layout) == [D % 2, 'mirror', D % 1, D % 5, 'log', D % 6, 'mirror', D % 3, D % 4]
    # a 3-way mirror stays what it is
    assert layout_args(wanted_layout(data=[{'type': 'mirror', 'disks': by_id(1, 2, 3)}])) == ['mirror'] + by_id(1, 2, 3)
