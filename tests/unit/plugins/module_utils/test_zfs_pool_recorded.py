# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The zpool parser and planner against RECORDED output of real `zpool status` runs that users and
maintainers published (fixtures/zfs_pool/recorded, sources in its SOURCES.md), as opposed to the
format-derived fixtures test_zfs_pool_layout.py uses."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

import pytest

from ansible_collections.pvesan.storage.plugins.module_utils._zfs_pool import (
    Resolver,
    parse_import_list,
    parse_status,
    plan,
    wanted_layout,
)

from ansible_collections.pvesan.storage.tests.unit.plugins.module_utils.test_zfs_pool_layout import fixture


def recorded(name):
    return fixture('recorded/' + name)


def pools(text):
    """Split the output of `zpool status` for several pools into one text per pool."""
    starts = [m.start() for m in re.finditer(r'^ *pool: ', text, re.M)]
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


def shape(layout):
    return [(v['class'], v['type'], len(v['disks'])) for v in layout]


def unchanged(current, wanted, resolver):
    """The second run of the module: nothing to add, remove or refuse."""
    return plan('p', current, wanted, resolver)[:3] == ([], [], [])


# No host links: short names fall back to /dev/<name>, as on a host where they are kernel names.
PLAIN = Resolver({}, sysfs='/nonexistent')


@pytest.mark.parametrize('name, expected', [
    # Tab-indented, as zpool prints it.
    ('openzfs-10612-special.status', [('data', 'disk', 1), ('special', 'disk', 1)]),
    ('openzfs-3877-logs-cache-spares.status', [('data', 'mirror', 2), ('data', 'mirror', 2), ('log', 'disk', 1),
                                               ('cache', 'disk', 1), ('spare', 'disk', 1), ('spare', 'disk', 1)]),
    # Spaces instead of the tab (copied from a terminal); before the fix these parsed as an empty pool.
    ('openzfs-1391-mirror-cache.status', [('data', 'mirror', 2), ('cache', 'disk', 1)]),
    ('checkmk-475-special-mirror.status', [('data', 'mirror', 2), ('special', 'mirror', 2)]),
    ('node-exporter-zpool_status_-p_logs.status', [('data', 'mirror', 2), ('data', 'mirror', 2), ('log', 'disk', 1)]),
    # An active hot spare (spare-0) is not a third member of mirror-0.
    ('node-exporter-zpool_status_-p_degraded_sparse.status', [('data', 'mirror', 2), ('data', 'mirror', 2)]
     + [('spare', 'disk', 1)] * 4),
    # dRAID: distributed spares are part of their vdev, not spare vdevs, even when in use.
    ('kneutron-draid1-4x6c.status', [('data', 'draid1:4d:6c:1s', 6)] * 4),
    ('kneutron-draid1-4x6c-degraded.status', [('data', 'draid1:4d:6c:1s', 6)] * 4),
    ('kneutron-draid2-24c-spare-inuse.status', [('data', 'draid2:5d:24c:2s', 24)]),
])
def test_recorded_layouts(name, expected):
    assert shape(parse_status(recorded(name))) == expected


def test_recorded_multi_pool_outputs():
    pool0, pool1 = pools(recorded('node-exporter-zpool_status_-p.status'))
    assert [(v['type'], v['disks']) for v in parse_status(pool0)] == [('raidz1', [
        'ata-TOSHIBA_MG09ACA18TE_82X0A0QMFJDH', 'ata-TOSHIBA_MG09ACA18TE_82J0A00FFJDH',
        'ata-TOSHIBA_MG09ACA18TE_82X0A0QPFJDH'])]
    assert [(v['type'], v['disks']) for v in parse_status(pool1)] == [('mirror', [
        'nvme-Samsung_SSD_980_500GB_S64DNL0T824602E-part1', 'nvme-Samsung_SSD_980_500GB_S64DNL0T824555Z-part1'])]
    # O3X-style names with colons, no blank lines around the config, spaces for the tab.
    assert [parse_status(p)[0]['disks'] for p in pools(recorded('jc-zpool-status-v.status'))] == [
        ['726060ALE614-K8JAPRGN:10'], ['ST3500418AS-5VMSTSSX:5'], ['Portable_SSD_T5-S49WNP0N120517B:8']]


def test_recorded_names_and_classes():
    layout = parse_status(recorded('openzfs-3877-logs-cache-spares.status'))
    assert [v['name'] for v in layout[:2]] == ['mirror-0', 'mirror-1']
    assert layout[3]['disks'] == ['ata-Corsair_Force_3_SSD_11476510000011541375-part1']
    assert [v['disks'][0] for v in layout if v['class'] == 'spare'] == [
        'ata-SAMSUNG_HD103SJ_S246J9DZC01214', 'ata-SAMSUNG_HD103SJ_S246J9DZC01224']
    special = parse_status(recorded('checkmk-475-special-mirror.status'))[1]
    assert special['name'] == 'mirror-2' and special['disks'][1].endswith('S4CZNF0N458919M-part3')
    # An UNAVAIL member shows as its guid ("was /dev/dsk/...") and still counts as a member.
    assert parse_status(recorded('node-exporter-zpool_status_-p_logs.status'))[0]['disks'] == [
        '9669136929555758172', 'c0t5000C500631F81E7d0']
    assert parse_status(recorded('node-exporter-zpool_status_-p_degraded_sparse.status'))[0]['disks'] == [
        'ata-VBOX_HARDDISK_VBb80f1f56-538e9acf', 'ata-VBOX_HARDDISK_VB875e28a5-4b293298']
    degraded = parse_status(recorded('kneutron-draid1-4x6c-degraded.status'))
    assert degraded[3]['disks'] == ['sdt', 'sdu', 'sdv', 'sdw', 'sdx', 'sdy']


def test_recorded_import_list():
    assert parse_import_list(recorded('openzfs-10612-special.import')) == ['test']


# --- second run unchanged ------------------------------------------------------------------
def draid(parity, data, spares, disks):
    return {'type': 'draid%d' % parity, 'draid_data': data, 'draid_spares': spares, 'disks': disks}


def test_recorded_draid_second_run_unchanged_even_with_spares_in_use():
    disks = ['sd' + c for c in 'bcdefghijklmnopqrstuvwxy']
    wanted = wanted_layout(data=[draid(1, 4, 1, disks[i:i + 6]) for i in range(0, 24, 6)])
    for name in ('kneutron-draid1-4x6c.status', 'kneutron-draid1-4x6c-degraded.status'):
        assert unchanged(parse_status(recorded(name)), wanted, PLAIN), name
    wanted = wanted_layout(data=[draid(2, 5, 2, disks)])
    assert unchanged(parse_status(recorded('kneutron-draid2-24c-spare-inuse.status')), wanted, PLAIN)


def test_recorded_file_vdevs_with_special():
    wanted = wanted_layout(data=[{'disks': ['/tmp/0.raw']}], special=[{'disks': ['/tmp/1.raw']}])
    assert unchanged(parse_status(recorded('openzfs-10612-special.status')), wanted, PLAIN)


# The recorded statuses show the by-id / by-path names the pools were created with (zpool status
# without -P prints the last path component). Where those links point on the host is not in the
# recordings: this table is a stand-in for the host's /dev/disk, in the form Resolver replays.
BY_ID = '/dev/disk/by-id/'
BY_PATH = '/dev/disk/by-path/'
HOST_LINKS = {
    BY_ID + 'ata-TOSHIBA_MG09ACA18TE_82X0A0QMFJDH': '../../sdb',
    BY_ID + 'ata-TOSHIBA_MG09ACA18TE_82J0A00FFJDH': '../../sdc',
    BY_ID + 'ata-TOSHIBA_MG09ACA18TE_82X0A0QPFJDH': '../../sdd',
    BY_ID + 'nvme-Samsung_SSD_980_500GB_S64DNL0T824602E': '../../nvme0n1',
    BY_ID + 'nvme-Samsung_SSD_980_500GB_S64DNL0T824602E-part1': '../../nvme0n1p1',
    BY_ID + 'nvme-Samsung_SSD_980_500GB_S64DNL0T824555Z': '../../nvme1n1',
    BY_ID + 'nvme-Samsung_SSD_980_500GB_S64DNL0T824555Z-part1': '../../nvme1n1p1',
    BY_ID + 'ata-SAMSUNG_HD103SJ_S246J9DZC01225': '../../sde',
    BY_ID + 'ata-SAMSUNG_HD103SJ_S246J9DZC01216': '../../sdf',
    BY_ID + 'ata-SAMSUNG_HD103SJ_S246J9DZC01218': '../../sdg',
    BY_ID + 'ata-SAMSUNG_HD103SJ_S246J9DZC01222': '../../sdh',
    BY_ID + 'ata-INTEL_SSDSA2M040G2GC_CVGB0375006V040NGN': '../../sdi',
    BY_ID + 'ata-Corsair_Force_3_SSD_11476510000011541375-part1': '../../sdj1',
    BY_ID + 'ata-SAMSUNG_HD103SJ_S246J9DZC01214': '../../sdk',
    BY_ID + 'ata-SAMSUNG_HD103SJ_S246J9DZC01224': '../../sdl',
    BY_ID + 'ata-VBOX_HARDDISK_VBb80f1f56-538e9acf': '../../sdm',
    BY_ID + 'ata-VBOX_HARDDISK_VB875e28a5-4b293298': '../../sdn',
    BY_ID + 'ata-VBOX_HARDDISK_VB4145ff65-9b1320a3': '../../sdo',
    BY_ID + 'ata-VBOX_HARDDISK_VBee9d66a1-edf52bff': '../../sdp',
    BY_PATH + 'pci-0000:00:0d.0-scsi-10:0:0:0': '../../sdq',
    BY_PATH + 'pci-0000:00:0d.0-scsi-11:0:0:0': '../../sdr',
    BY_PATH + 'pci-0000:00:0d.0-scsi-12:0:0:0': '../../sds',
    BY_PATH + 'pci-0000:00:0d.0-scsi-13:0:0:0': '../../sdt',
}
HOST = Resolver(HOST_LINKS, sysfs='/nonexistent')


@pytest.mark.parametrize('prefix', [BY_ID, ''])  # full by-id paths, and the short names zpool also accepts
def test_recorded_by_id_second_run_unchanged(prefix):
    pool0, pool1 = [parse_status(p) for p in pools(recorded('node-exporter-zpool_status_-p.status'))]
    wanted = wanted_layout(data=[{'type': 'raidz1', 'disks': [prefix + d for d in pool0[0]['disks']]}])
    assert unchanged(pool0, wanted, HOST)
    # The mirror was made of partitions; naming the whole disks is the same layout too.
    for suffix in ('-part1', ''):
        wanted = wanted_layout(data=[{'type': 'mirror', 'disks': [
            prefix + 'nvme-Samsung_SSD_980_500GB_S64DNL0T824602E' + suffix,
            prefix + 'nvme-Samsung_SSD_980_500GB_S64DNL0T824555Z' + suffix]}])
        assert unchanged(pool1, wanted, HOST), suffix


def test_recorded_by_id_all_classes_second_run_unchanged():
    current = parse_status(recorded('openzfs-3877-logs-cache-spares.status'))
    disk = BY_ID + 'ata-SAMSUNG_HD103SJ_S246J9DZC012%s'
    wanted = wanted_layout(
        data=[{'type': 'mirror', 'disks': [disk % 25, disk % 16]}, {'type': 'mirror', 'disks': [disk % 18, disk % 22]}],
        log=[{'disks': [BY_ID + 'ata-INTEL_SSDSA2M040G2GC_CVGB0375006V040NGN']}],
        cache=[BY_ID + 'ata-Corsair_Force_3_SSD_11476510000011541375-part1'],
        spare=[disk % 14, disk % 24])
    assert unchanged(current, wanted, HOST)
    # The same pool named by kernel names (what `zpool status -L` would show) is the same pool.
    kernel = wanted_layout(
        data=[{'type': 'mirror', 'disks': ['sde', 'sdf']}, {'type': 'mirror', 'disks': ['/dev/sdg', '/dev/sdh']}],
        log=[{'disks': ['sdi']}], cache=['sdj1'], spare=['sdk', 'sdl'])
    assert unchanged(current, kernel, HOST)
    # A by-id disk the pool does not have is added, and only that.
    more = wanted + wanted_layout(cache=[BY_ID + 'ata-NEW_DISK'])
    commands, removals, conflicts, _after = plan('zones', current, more, HOST)
    assert (commands, removals, conflicts) == ([['zpool', 'add', 'zones', 'cache', BY_ID + 'ata-NEW_DISK']], [], [])


def test_recorded_active_hot_spare_second_run_unchanged():
    current = parse_status(recorded('node-exporter-zpool_status_-p_degraded_sparse.status'))
    vbox = BY_ID + 'ata-VBOX_HARDDISK_VB%s'
    wanted = wanted_layout(
        data=[{'type': 'mirror', 'disks': [vbox % 'b80f1f56-538e9acf', vbox % '875e28a5-4b293298']},
              {'type': 'mirror', 'disks': [vbox % '4145ff65-9b1320a3', vbox % 'ee9d66a1-edf52bff']}],
        spare=[BY_PATH + 'pci-0000:00:0d.0-scsi-%d:0:0:0' % n for n in (10, 11, 12, 13)])
    assert unchanged(current, wanted, HOST)
