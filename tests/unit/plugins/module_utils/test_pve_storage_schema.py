# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-type validation of declared storages (what the module checks before any write)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_cfg import (
    Section, StorageConfig, desired_props, format_section, plan_present,
)
from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_schema import (
    PROPERTIES, TYPES, SchemaError,
)

# one valid storage of every type: (type, props)
VALID = {
    'dir': {'path': '/srv/dir', 'content': ['iso', 'backup'], 'prune-backups': 'keep-last=3,keep-daily=7',
            'snapshot-as-volume-chain': True, 'bwlimit': 'default=100.5,migration=10'},
    'nfs': {'server': '10.0.0.10', 'export': '/space/iso', 'options': 'vers=4.2', 'content': ['iso', 'vztmpl']},
    'cifs': {'server': 'nas.example.com', 'share': 'VMData', 'username': 'anna', 'smbversion': '3'},
    'pbs': {'server': 'pbs.example.com', 'datastore': 'main', 'username': 'archiver@pbs', 'port': 8007},
    'zfspool': {'pool': 'rpool/data', 'sparse': True, 'blocksize': '16k'},
    'lvm': {'vgname': 'vg0', 'shared': True, 'saferemove': False, 'saferemove-stepsize': 16,
            'snapshot-as-volume-chain': True},
    'lvmthin': {'vgname': 'pve', 'thinpool': 'data'},
    'iscsi': {'portal': '10.10.10.1:3260', 'target': 'iqn.2006-01.com.example:t1', 'content': []},
    'iscsidirect': {'portal': '[fd00::1]:3260', 'target': 'iqn.2006-01.com.example:t1'},
    'rbd': {'monhost': '10.1.1.20 10.1.1.21', 'pool': 'rbd', 'krbd': True, 'username': 'admin'},
    'cephfs': {'monhost': '10.1.1.20', 'fs-name': 'cephfs', 'content': ['backup']},
    'btrfs': {'path': '/var/lib/pve/local-btrfs', 'nocow': False},
    'zfs': {'portal': '192.0.2.111', 'target': 'iqn.2003-01.org.linux-iscsi.lio:sn.1', 'pool': 'tank',
            'blocksize': '4k', 'iscsiprovider': 'LIO', 'lio_tpg': 'tpg1', 'sparse': True, 'zfs-base-path': '/dev/zvol'},
    'esxi': {'server': 'esxi.example.com', 'username': 'root', 'skip-cert-verification': True},
    'pvesan': {'api_url': 'https://10.89.1.10:8443/api', 'ssl_verify_peer': True, 'transport_encryption': 'tls',
               'multipath': True, 'query_include': ['ssd', 'rack1'], 'service_type': 'gold'},
}


def test_every_admin_guide_type_has_a_schema():
    assert set(TYPES) == set(VALID)


@pytest.mark.parametrize('stype', sorted(VALID))
def test_valid_storage_of_every_type_round_trips(stype):
    props = desired_props(stype, 'store-1', VALID[stype])
    section = plan_present(StorageConfig.parse(''), 'store-1', stype, props)[1]
    text = format_section(section) + '\n'
    parsed = StorageConfig.parse(text)
    assert parsed.get('store-1').props == section.props
    assert parsed.render() == text


@pytest.mark.parametrize('stype, props, words', [
    ('dir', {'path': '/x', 'vgname': 'pve'}, "'vgname' is not valid for storage type 'dir'"),
    ('nfs', {'server': 'a', 'export': '/e', 'shared': True}, 'always shared'),
    ('dir', {'path': '/x', 'shared': 'maybe'}, 'must be a boolean'),
    ('dir', {'path': '/x', 'maxfiles': 3}, "Proxmox VE 9 removed 'maxfiles'"),
    ('glusterfs', {'volume': 'gv0'}, 'Proxmox VE 9 has no glusterfs'),
    ('dir', {'path': '/x', 'max-protected-backups': 'ten'}, 'must be an integer'),
    ('dir', {'path': '/x', 'max-protected-backups': True}, 'must be an integer'),
    ('dir', {'path': '/x', 'prune-backups': 'keep-all=1,keep-last=2'}, 'keep-all cannot be set together'),
    ('dir', {'path': '/x', 'prune-backups': 'keep-all=maybe'}, 'keep-all must be a boolean'),
    ('dir', {'path': '/x', 'prune-backups': 'keep-last=-1'}, 'integer >= 0'),
    ('dir', {'path': '/x', 'content-dirs': 'iso=../escape'}, "no '..'"),
    ('cephfs', {'content-dirs': 'images=img'}, 'no content type of this storage type'),
    ('nfs', {'server': '[2001:db8::1]', 'export': '/e'}, 'IPv6 without brackets'),
    ('cephfs', {'format': 'qcow2'}, "does not support format 'qcow2'"),
    ('dir', {'path': '/x', 'bwlimit': 'default=-1'}, 'number >= 0'),
    ('dir', {'path': '/x', 'bwlimit': 'default=fast'}, 'number >= 0'),
    ('pvesan', {'api_url': 'https://x', 'shared': False}, 'always shared'),
    ('pbs', {'server': 'a', 'datastore': 'd', 'master-pubkey': 'LS0t'}, "option 'master_pubkey'"),
    ('lvm', {'vgname': 'vg0', 'saferemove-stepsize': 3}, 'must be one of'),
    ('pbs', {'server': 'a', 'datastore': 'd', 'port': 70000}, '<= 65535'),
    ('lvm', {'vgname': 'pve', 'content': ['iso']}, "does not support content type 'iso'"),
    ('dir', {'path': '/x', 'content': ['none', 'iso']}, "'none' cannot be combined"),
    ('lvm', {'vgname': 'pve', 'content': []}, 'empty content list'),
    ('lvm', {'vgname': 'bad name'}, 'LVM name'),
    ('zfs', {'iscsiprovider': 'lio'}, 'case sensitive'),
    ('zfspool', {'pool': 'p', 'blocksize': '3k'}, 'power of 2'),
    ('pbs', {'server': 'a', 'datastore': 'd', 'fingerprint': 'ab:cd'}, 'SHA-256'),
    ('dir', {'path': '/x', 'format': 'vmdk2'}, "must be one of"),
    ('lvmthin', {'vgname': 'pve', 'thinpool': 'data', 'format': 'qcow2'}, "'format' is not valid"),
    ('zfspool', {'pool': 'p', 'format': 'qcow2'}, "'format' is not valid"),
    ('dir', {'path': '/x', 'format': 'subvol', 'nodes': ['pve1', 'bad_node']}, 'not a valid node name'),
    ('dir', {'path': '/x y'}, 'illegal path'),
    ('cifs', {'server': 'a', 'share': 's', 'password': 'x'}, 'secret'),
    ('pvesan', {'api_url': 'https://x/api', 'auth_token': 't'}, 'secret'),
    ('pvesan', {'api_url': 'ftp://x'}, 'http'),
    ('pvesan', {'api_url': 'https://x', 'transport_encryption': 'wireguard'}, 'tls, ipsec, none'),
    ('pvesan', {'api_url': 'https://x', 'query_include': ['a,b']}, 'list items'),
    ('nfs', {'server': 'a', 'export': '/e', 'options': 'vers=3, soft'}, 'white space'),
    ('dir', {'path': '/x', 'content-dirs': 'iso'}, 'content'),
    ('dir', {'path': '/x', 'bwlimit': 'fast=1'}, 'key=value'),
    ('frob', {}, 'unknown storage type'),
])
def test_invalid_input_names_the_property_and_rule(stype, props, words):
    with pytest.raises(SchemaError) as e:
        desired_props(stype, 'store-1', props)
    assert words in str(e.value)


@pytest.mark.parametrize('sid', ['a', '1ab', 'ab-', 'a b', 'ab/c', '', 'ä1'])
def test_storage_ids_proxmox_rejects(sid):
    with pytest.raises(SchemaError) as e:
        desired_props('dir', sid, {'path': '/x'})
    assert 'storage ID' in str(e.value)


def test_local_must_stay_the_default_dir_storage():
    with pytest.raises(SchemaError):
        desired_props('lvm', 'local', {'vgname': 'pve'})
    with pytest.raises(SchemaError):
        desired_props('dir', 'local', {'path': '/srv'})
    assert desired_props('dir', 'local', {'path': '/var/lib/vz', 'content': ['iso']})


@pytest.mark.parametrize('stype', sorted(VALID))
def test_missing_required_property_is_named(stype):
    required = [k for k in TYPES[stype].required() if k != 'path' or not TYPES[stype].path_default]
    for key in required:
        props = desired_props(stype, 'st1', dict((k, v) for k, v in VALID[stype].items() if k != key))
        with pytest.raises(SchemaError) as e:
            plan_present(StorageConfig.parse(''), 'st1', stype, props)
        assert key in str(e.value)


def test_create_defaults():
    cfg = StorageConfig.parse('')
    nfs = plan_present(cfg, 'iso', 'nfs', desired_props('nfs', 'iso', VALID['nfs']))[1]
    assert nfs.props['path'] == '/mnt/pve/iso'
    san = plan_present(cfg, 'san', 'pvesan', desired_props('pvesan', 'san', VALID['pvesan']))[1]
    assert san.props['shared'] is True
    san = plan_present(cfg, 'san', 'pvesan', desired_props('pvesan', 'san', dict(VALID['pvesan'], shared=True)))[1]
    assert san.props['shared'] is True


@pytest.mark.parametrize('stype', sorted(VALID))
def test_no_content_given_writes_the_types_default_so_proxmox_changes_nothing(stype):
    """Finding 16: parse_config fills in the type's default content; written at once, it is stable."""
    props = dict((k, v) for k, v in VALID[stype].items() if k != 'content')
    section = plan_present(StorageConfig.parse(''), 's1', stype, desired_props(stype, 's1', props))[1]
    assert section.props['content'] == sorted(TYPES[stype].default_content)


def test_empty_nodes_list_is_no_restriction_and_idempotent():
    """Finding 16: nodes: [] used to change the section on every run."""
    cfg = StorageConfig.parse('dir: d1\n\tpath /x\n\tcontent iso\n')
    assert plan_present(cfg, 'd1', 'dir', desired_props('dir', 'd1', {'nodes': []}))[1] is cfg.get('d1')
    cfg = StorageConfig.parse('dir: d1\n\tpath /x\n\tcontent iso\n\tnodes pve1\n')
    new = plan_present(cfg, 'd1', 'dir', desired_props('dir', 'd1', {'nodes': []}))[1]
    assert 'nodes' not in new.props


def test_unknown_keys_go_when_the_section_is_rewritten():
    """Finding 16: Proxmox drops unknown keys when it writes a section; so does an edit."""
    cfg = StorageConfig.parse('dir: d1\n\tpath /x\n\tcontent iso\n\tcolour blue\n')
    assert plan_present(cfg, 'd1', 'dir', desired_props('dir', 'd1', {'content': ['iso']}))[1] is cfg.get('d1')
    new = plan_present(cfg, 'd1', 'dir', desired_props('dir', 'd1', {'content': ['iso', 'backup']}))[1]
    assert new.props == {'path': '/x', 'content': ['backup', 'iso']}
    new = plan_present(cfg, 'd1', 'dir', desired_props('dir', 'd1', {'content': ['iso']}), purge=True)[1]
    assert new.props == {'path': '/x', 'content': ['iso']}


def test_pvesan_api_url_is_fixed_as_the_plugin_declares():
    """Finding 16: the plugin's options() has api_url { fixed => 1 }."""
    cfg = StorageConfig.parse('pvesan: san\n\tapi_url https://a:8443\n\tcontent images\n\tshared 1\n')
    with pytest.raises(SchemaError) as e:
        plan_present(cfg, 'san', 'pvesan', desired_props('pvesan', 'san', {'api_url': 'https://b:8443'}))
    assert 'fixed' in str(e.value)


def test_pve9_options_survive_purge_and_can_be_declared():
    """Finding 12: snapshot-as-volume-chain (fixed on dir/nfs/cifs) survives purge; lvm's
    saferemove-stepsize and zfs's zfs-base-path can be declared."""
    cfg = StorageConfig.parse('dir: d1\n\tpath /x\n\tcontent images\n\tsnapshot-as-volume-chain 1\n')
    assert cfg.warnings == []
    new = plan_present(cfg, 'd1', 'dir', desired_props('dir', 'd1', {'content': ['images', 'iso']}), purge=True)[1]
    assert new.props['snapshot-as-volume-chain'] is True
    cfg = StorageConfig.parse('lvm: l1\n\tvgname vg0\n\tcontent images\n\tsaferemove-stepsize 16\n')
    assert cfg.warnings == [] and cfg.get('l1').props['saferemove-stepsize'] == '16'
    zfs = desired_props('zfs', 'z1', VALID['zfs'])
    assert zfs['zfs-base-path'] == '/dev/zvol'


@pytest.mark.parametrize('stype, key, value', [
    ('lvmthin', 'vgname', 'other'), ('zfspool', 'pool', 'tank/x'), ('dir', 'path', '/other'),
    ('nfs', 'server', '10.0.0.11'), ('nfs', 'export', '/other'), ('iscsi', 'portal', '10.0.0.2'),
    ('iscsi', 'target', 'iqn.x:y'), ('zfs', 'iscsiprovider', 'iet'), ('lvm', 'base', 'iscsi1:0.0.1.scsi-x'),
])
def test_fixed_properties_cannot_change(stype, key, value):
    cfg = StorageConfig.parse('')
    section = plan_present(cfg, 's1', stype, desired_props(stype, 's1', VALID[stype]))[1]
    cfg.set(section)
    cfg = StorageConfig.parse(cfg.render())
    with pytest.raises(SchemaError) as e:
        plan_present(cfg, 's1', stype, desired_props(stype, 's1', {key: value}))
    assert "'%s'" % key in str(e.value) and 'fixed' in str(e.value)


def test_update_purge_and_idempotence():
    cfg = StorageConfig.parse('dir: d1\n\tpath /x\n\tcontent iso\n\tmkdir 0\n\tfrob 1\n')
    old, new = plan_present(cfg, 'd1', 'dir', desired_props('dir', 'd1', {'content': ['iso']}))
    assert new is old                                   # nothing to do
    old, new = plan_present(cfg, 'd1', 'dir', desired_props('dir', 'd1', {'content': ['iso'], 'disable': False}))
    assert new is old                                   # disable=false is Proxmox's "no disable line"
    old, new = plan_present(cfg, 'd1', 'dir', desired_props('dir', 'd1', {'content': ['iso']}), purge=True)
    assert new.props == {'path': '/x', 'content': ['iso']}   # required 'path' survives purge
    with pytest.raises(SchemaError):
        plan_present(cfg, 'd1', 'lvm', desired_props('lvm', 'd1', {'vgname': 'x'}))


def test_pvesan_property_names_do_not_collide_with_builtin_plugins():
    """One property namespace for all plugins: a name defined twice breaks storage loading."""
    pvesan_props = set(k for k, p in PROPERTIES.items() if p.owner == 'pvesan')
    assert pvesan_props == {'api_url', 'auth_token', 'ssl_verify_peer', 'service_type', 'query_include',
                            'query_exclude', 'transport_encryption', 'multipath'}
    builtin_options = set(k for t in TYPES.values() if not t.custom for k in t.options)
    assert not pvesan_props & builtin_options


def test_section_equality_ignores_list_order():
    cfg = StorageConfig.parse('lvm: v1\n\tvgname vg\n\tcontent rootdir,images\n\tnodes b,a\n')
    props = desired_props('lvm', 'v1', {'content': ['images', 'rootdir'], 'nodes': 'a, b'})
    old, new = plan_present(cfg, 'v1', 'lvm', props)
    assert new is old
    assert isinstance(new, Section)


def test_null_removes_an_optional_property_only():
    cfg = StorageConfig.parse('dir: d1\n\tpath /x\n\tcontent iso\n\tmkdir 0\n')
    old, new = plan_present(cfg, 'd1', 'dir', desired_props('dir', 'd1', {'mkdir': None}))
    assert new.props == {'path': '/x', 'content': ['iso']}
    old, new = plan_present(cfg, 'd1', 'dir', desired_props('dir', 'd1', {'shared': None}))
    assert new is old
    with pytest.raises(SchemaError) as e:
        desired_props('dir', 'd1', {'path': None})
    assert 'fixed' in str(e.value)
    with pytest.raises(SchemaError) as e:
        desired_props('esxi', 'e1', {'server': None})
    assert 'required' in str(e.value)
    assert plan_present(StorageConfig.parse(''), 'd2', 'dir', desired_props('dir', 'd2', {'path': '/y', 'mkdir': None}))[1].props \
        == {'path': '/y', 'content': ['images', 'rootdir']}
