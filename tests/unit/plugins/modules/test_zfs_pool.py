# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The zfs_pool module end to end, replaying zpool/zfs output from
tests/unit/plugins/module_utils/fixtures/zfs_pool (origin in its README)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pvesan.storage.plugins.module_utils._zfs_pool import Resolver
from ansible_collections.pvesan.storage.plugins.modules import zfs_pool as mod

FIXTURES = os.path.join(os.path.dirname(__file__), '..', 'module_utils', 'fixtures', 'zfs_pool')
BYID = '/dev/disk/by-id/ata-WDC_WD40EFRX-68N32N0_WD-WCC7K0AAAAA%d'
NVME = '/dev/disk/by-id/nvme-Samsung_SSD_980_PRO_1TB_S5GXNF0R00000%d'


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


def recorded_links():
    links = {}
    for name in ('by-id.ls', 'by-path.ls'):
        for line in fixture(name).splitlines():
            if ' -> ' in line:
                left, target = line.split(' -> ')
                links['/dev/disk/%s/%s' % (name.split('.', maxsplit=1)[0], left.split()[-1])] = target
    return links


class FakeZfs(object):
    """Answers read-only zpool/zfs queries from fixtures; records every command."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, module, argv, **kwargs):
        cmd = ' '.join([os.path.basename(argv[0])] + list(argv[1:]))
        self.calls.append(cmd)
        if cmd in self.answers:
            return self.answers[cmd]
        if cmd.split()[1] in ('create', 'add', 'attach', 'remove', 'destroy', 'export', 'import', 'set'):
            return 0, '', ''
        raise AssertionError('unexpected command: %s' % cmd)

    def changes(self):
        return [c for c in self.calls if c.split()[1] not in ('list', 'status', 'get')
                and c not in self.answers]


@pytest.fixture
def zfs(monkeypatch):
    fake = FakeZfs({})

    def run_command(module, argv, **kwargs):  # a plain function, so it binds as a method
        return fake(module, argv, **kwargs)

    monkeypatch.setattr(basic.AnsibleModule, 'run_command', run_command)
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', lambda self, name, **kw: '/usr/sbin/' + name)
    links = recorded_links()
    monkeypatch.setattr(mod, 'Resolver', lambda: Resolver(links, sysfs='/nonexistent'))
    return fake


def run(capsys, args, check=False):
    with patch_module_args(dict(args, _ansible_check_mode=check, _ansible_diff=True)):
        with pytest.raises(SystemExit):
            mod.main()
    return json.loads(capsys.readouterr().out)


def existing(zfs, pool, status, zpool_get='tank.zpool-get', zfs_get='tank.zfs-get', keys=('ashift,autotrim', 'atime,compression')):
    zfs.answers.update({
        'zpool list -H -o name %s' % pool: (0, pool + '\n', ''),
        'zpool status -P -L %s' % pool: (0, fixture(status), ''),
        # format-derived: there is no form without -L; the resolved names stand in for the paths
        'zpool status -P %s' % pool: (0, fixture(status), ''),
        'zpool get -H -p %s %s' % (keys[0], pool): (0, fixture(zpool_get).replace('tank', pool), ''),
        'zfs get -H -p %s %s' % (keys[1], pool): (0, fixture(zfs_get).replace('tank', pool), ''),
    })


def missing(zfs, pool):
    zfs.answers.update({'zpool list -H -o name %s' % pool: (1, '', "cannot open '%s': no such pool\n" % pool),
                        'zpool import': (1, '', 'no pools available to import\n')})


RAID10 = dict(
    name='tank', ashift=12, autotrim=True,
    vdevs=[{'type': 'mirror', 'disks': [BYID % 1, BYID % 2]}, {'type': 'mirror', 'disks': [BYID % 3, BYID % 4]}],
    log=[{'type': 'mirror', 'disks': [NVME % 1 + '-part1', NVME % 2 + '-part1']}],
    cache=[NVME % 1 + '-part2'], spares=[BYID % 5],
    filesystem_properties={'compression': 'lz4', 'atime': 'off'},
)
RAID10_CREATE = (
    'zpool create -o ashift=12 -o autotrim=on -O atime=off -O compression=lz4 tank '
    'mirror {1} {2} mirror {3} {4} log mirror {n1}-part1 {n2}-part1 cache {n1}-part2 spare {5}'.format(
        *[None] + [BYID % i for i in range(1, 6)], n1=NVME % 1, n2=NVME % 2))


def test_create_check_mode_predicts_exact_command(capsys, zfs):
    missing(zfs, 'tank')
    res = run(capsys, RAID10, check=True)
    assert res['changed'] and res['commands'] == [RAID10_CREATE]
    assert zfs.changes() == []
    assert 'mirror' in res['diff']['after'] and res['diff']['before'] == ''


def test_create_runs_the_predicted_command(capsys, zfs):
    missing(zfs, 'tank')
    res = run(capsys, RAID10)
    assert res['commands'] == [RAID10_CREATE] and zfs.changes() == [RAID10_CREATE]


@pytest.mark.parametrize('disks', [
    [BYID % i for i in range(1, 6)],
    ['sdb', 'sdc', 'sdd', 'sde', 'sdf'],
    ['/dev/disk/by-path/pci-0000:00:17.0-ata-%d' % i for i in range(2, 6)] + ['/dev/sdf'],
])
def test_second_run_unchanged_with_by_id_or_short_names(capsys, zfs, disks):
    existing(zfs, 'tank', 'raid10.status')
    args = dict(RAID10, vdevs=[{'type': 'mirror', 'disks': disks[0:2]}, {'type': 'mirror', 'disks': disks[2:4]}],
                spares=[disks[4]])
    res = run(capsys, args)
    assert not res['changed'] and res['commands'] == [] and zfs.changes() == []
    assert [v['type'] for v in res['layout']] == ['mirror', 'mirror', 'mirror', 'disk', 'disk']


@pytest.mark.parametrize('status, pool, options, create', [
    ('stripe.status', 'stripe', dict(vdevs=[{'disks': ['sdb', 'sdc']}]), 'zpool create stripe sdb sdc'),
    ('raidz1.status', 'rz1', dict(vdevs=[{'type': 'raidz1', 'disks': ['sdb', 'sdc', 'sdd']}]),
     'zpool create rz1 raidz1 sdb sdc sdd'),
    ('raidz2.status', 'rz2', dict(vdevs=[{'type': 'raidz2', 'disks': ['sdb', 'sdc', 'sdd', 'sde']}],
                                  special=[{'type': 'mirror', 'disks': ['nvme0n1', 'nvme1n1']}],
                                  dedup=[{'type': 'mirror', 'disks': ['nvme2n1', 'nvme3n1']}]),
     'zpool create rz2 raidz2 sdb sdc sdd sde special mirror nvme0n1 nvme1n1 dedup mirror nvme2n1 nvme3n1'),
    ('raidz3.status', 'rz3', dict(vdevs=[{'type': 'raidz3', 'disks': ['sdb', 'sdc', 'sdd', 'sde', 'sdf']}]),
     'zpool create rz3 raidz3 sdb sdc sdd sde sdf'),
    ('draid2.status', 'bulk', dict(vdevs=[{'type': 'draid2', 'draid_data': 4, 'draid_spares': 1,
                                           'disks': ['sd' + c for c in 'bcdefghijkl']}]),
     'zpool create bulk draid2:4d:1s ' + ' '.join('sd' + c for c in 'bcdefghijkl')),
    ('files.status', 'lab', dict(vdevs=[{'type': 'mirror', 'disks': ['/var/lib/pvesan/zfs/disk0.img',
                                                                     '/var/lib/pvesan/zfs/disk1.img']}]),
     'zpool create lab mirror /var/lib/pvesan/zfs/disk0.img /var/lib/pvesan/zfs/disk1.img'),
])
def test_every_layout_created_then_unchanged(capsys, zfs, status, pool, options, create):
    missing(zfs, pool)
    assert run(capsys, dict(options, name=pool))['commands'] == [create]
    zfs.answers.clear()
    zfs.calls[:] = []
    existing(zfs, pool, status)
    res = run(capsys, dict(options, name=pool))
    assert not res['changed'] and zfs.changes() == []


def test_add_vdev_and_attach_to_mirror(capsys, zfs):
    existing(zfs, 'tank', 'raid10.status')
    args = dict(RAID10, vdevs=RAID10['vdevs'] + [{'type': 'mirror', 'disks': ['sdg', 'sdh']}])
    args['vdevs'][0] = {'type': 'mirror', 'disks': [BYID % 1, BYID % 2, 'sdi']}
    res = run(capsys, args, check=True)
    assert res['commands'] == ['zpool attach tank /dev/sdb1 sdi', 'zpool add -o ashift=12 tank mirror sdg sdh']
    assert zfs.changes() == []
    assert '/dev/sdb1 /dev/sdc1 sdi' in res['diff']['after'] and 'sdg sdh' in res['diff']['after']
    assert 'sdg' not in res['diff']['before']


def test_removing_vdevs_needs_allow_destroy(capsys, zfs):
    existing(zfs, 'tank', 'raid10.status')
    res = run(capsys, dict(RAID10, cache=[], spares=[]))
    assert res['failed'] and zfs.changes() == []
    assert 'cache' in res['msg'] and '/dev/nvme0n1p2' in res['msg'] and 'allow_destroy' in res['msg']
    res = run(capsys, dict(RAID10, cache=[], spares=[], allow_destroy=True))
    assert res['commands'] == ['zpool remove tank /dev/nvme0n1p2', 'zpool remove tank /dev/sdf1']


def test_layout_change_needs_recreate_and_says_so(capsys, zfs):
    existing(zfs, 'rz1', 'raidz1.status')
    args = dict(name='rz1', vdevs=[{'type': 'mirror', 'disks': ['sdb', 'sdc']}, {'type': 'mirror', 'disks': ['sdd', 'sde']}])
    res = run(capsys, args)
    assert res['failed'] and 'destroy and re-create' in res['msg'] and 'raidz1-0' in res['msg']
    assert zfs.changes() == []
    res = run(capsys, dict(args, allow_destroy=True, force=True), check=True)
    assert res['commands'] == ['zpool destroy rz1', 'zpool create -f rz1 mirror sdb sdc mirror sdd sde']


def test_properties_converge(capsys, zfs):
    existing(zfs, 'tank', 'raid10.status', 'tank-defaults.zpool-get', 'tank-defaults.zfs-get')
    res = run(capsys, RAID10)
    assert res['commands'] == ['zpool set ashift=12 tank', 'zpool set autotrim=on tank',
                               'zfs set atime=off tank', 'zfs set compression=lz4 tank']
    assert 'property autotrim=off' in res['diff']['before'] and 'filesystem compression=lz4' in res['diff']['after']


def test_exported_pool_is_imported_not_created(capsys, zfs):
    zfs.answers.update({'zpool list -H -o name tank': (1, '', 'no such pool'),
                        'zpool import -d /dev/disk/by-id': (0, fixture('import.list'), '')})
    res = run(capsys, dict(RAID10, import_dirs=['/dev/disk/by-id']), check=True)
    assert res['commands'] == ['zpool import -d /dev/disk/by-id tank']


def test_absent_export_and_import_states(capsys, zfs):
    existing(zfs, 'tank', 'raid10.status')
    res = run(capsys, dict(name='tank', state='absent'))
    assert res['failed'] and 'allow_destroy' in res['msg'] and zfs.changes() == []
    assert run(capsys, dict(name='tank', state='absent', allow_destroy=True))['commands'] == ['zpool destroy tank']
    assert run(capsys, dict(name='tank', state='exported'))['commands'] == ['zpool export tank']
    assert not run(capsys, dict(name='tank', state='imported'))['changed']
    missing(zfs, 'gone')
    assert not run(capsys, dict(name='gone', state='absent'))['changed']
    assert run(capsys, dict(name='gone', state='imported'))['failed']


def test_invalid_name_and_missing_vdevs(capsys, zfs):
    res = run(capsys, dict(name='mirror1', vdevs=[{'disks': ['sdb']}]))
    assert res['failed'] and 'must not be "log" or begin with mirror' in res['msg']
    missing(zfs, 'tank')
    res = run(capsys, dict(name='tank'))
    assert res['failed'] and 'give vdevs to create it' in res['msg']


# --- replayed from real OpenZFS 2.1.11 in the kernel VM (module_utils/fixtures/zfs_pool/kernel-vm)
KVM_DISK = '/dev/disk/by-id/virtio-pvesan-d%d'
KVM_TANK = dict(
    name='tank', ashift=12, autotrim=True,
    vdevs=[{'type': 'mirror', 'disks': [KVM_DISK % 1, KVM_DISK % 2]}, {'type': 'mirror', 'disks': [KVM_DISK % 3, KVM_DISK % 4]}],
    log=[{'type': 'mirror', 'disks': [KVM_DISK % 5, KVM_DISK % 6]}], cache=[KVM_DISK % 7], spares=[KVM_DISK % 8],
    filesystem_properties={'compression': 'lz4', 'atime': 'off', 'xattr': 'sa'},
)


@pytest.fixture
def vm(zfs, monkeypatch):
    """zfs with answers only from the kernel-VM recordings, keyed by the recorded command line."""
    from ansible_collections.pvesan.storage.tests.unit.plugins.module_utils import test_zfs_pool_kernel_vm as kvm
    monkeypatch.setattr(mod, 'Resolver', lambda: kvm.HOST)

    def answer(*names):
        for name in names:
            zfs.answers[' '.join(kvm.REC.argv(name))] = kvm.REC.answer(name)
    zfs.answer = answer
    zfs.rec = kvm.REC
    return zfs


def test_vm_create_runs_the_recorded_command(capsys, vm):
    vm.answer('list-missing', 'import-none')
    res = run(capsys, KVM_TANK)
    assert res['commands'] == [' '.join(vm.rec.argv('tank.create'))] and vm.rec.rc('tank.create') == 0


@pytest.mark.parametrize('name', [lambda n: KVM_DISK % n, lambda n: 'vd' + 'abcdefghijklm'[n], lambda n: '/dev/vd' + 'abcdefghijklm'[n]])
def test_vm_second_run_unchanged(capsys, vm, name):
    vm.answer('tank.list-name', 'tank.status', 'tank.status-paths', 'tank.zpool-get', 'tank.zfs-get-xattr')
    args = dict(KVM_TANK, vdevs=[{'type': 'mirror', 'disks': [name(1), name(2)]}, {'type': 'mirror', 'disks': [name(3), name(4)]}],
                log=[{'type': 'mirror', 'disks': [name(5), name(6)]}], cache=[name(7)], spares=[name(8)])
    res = run(capsys, args)
    assert not res['changed'] and res['commands'] == [] and vm.changes() == []


def test_vm_grow_and_converge_properties(capsys, vm):
    vm.answer('tank.list-name', 'tank.status', 'tank.status-paths', 'tank.zpool-get', 'tank.zfs-get')
    args = dict(KVM_TANK, vdevs=KVM_TANK['vdevs'] + [{'type': 'mirror', 'disks': [KVM_DISK % 9, KVM_DISK % 10]}],
                autotrim=False, filesystem_properties={'compression': 'lz4', 'atime': 'off', 'recordsize': '1M'})
    res = run(capsys, args)
    assert res['commands'] == [' '.join(vm.rec.argv(n)) for n in ('tank.add-mirror', 'tank.set-autotrim', 'tank.set-recordsize')]


def test_vm_exported_pool_is_imported_not_created(capsys, vm):
    vm.answer('tank.list-exported', 'tank.import-list')
    res = run(capsys, dict(name='tank', state='imported'), check=True)
    assert res['changed'] and res['commands'] == [' '.join(vm.rec.argv('tank.import'))]
    res = run(capsys, dict(KVM_TANK), check=True)
    assert res['commands'] == ['zpool import tank']  # never a zpool create over an exported pool


def test_vm_attach_and_remove_name_disks_as_zpool_keeps_them(capsys, vm):
    # zpool refuses the resolved name -L prints for a disk added by a by-id link
    assert vm.rec.rc('stripe.attach-resolved') != 0 and 'no such device in pool' in vm.rec.err('stripe.attach-resolved')
    assert vm.rec.rc('tank.remove-cache-resolved') != 0 and 'no such device in pool' in vm.rec.err('tank.remove-cache-resolved')
    vm.answer('stripe.list-name', 'stripe.status', 'stripe.status-paths')
    res = run(capsys, dict(name='stripe', vdevs=[{'type': 'mirror', 'disks': [KVM_DISK % 1, KVM_DISK % 5]}, {'disks': [KVM_DISK % 2]}]))
    assert res['commands'] == [' '.join(vm.rec.argv('stripe.attach'))] and vm.rec.rc('stripe.attach') == 0
    vm.answers.clear()
    vm.answer('tank.list-name', 'tank-added.status', 'tank-added.status-paths', 'tank.zpool-get', 'tank.zfs-get-xattr')
    res = run(capsys, dict(KVM_TANK, cache=[], allow_destroy=True,
                           vdevs=KVM_TANK['vdevs'] + [{'type': 'mirror', 'disks': [KVM_DISK % 9, KVM_DISK % 10]}]))
    assert res['commands'] == [' '.join(vm.rec.argv('tank.remove-cache'))] and vm.rec.rc('tank.remove-cache') == 0
