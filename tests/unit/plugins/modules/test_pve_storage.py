# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pve_storage and pve_storage_info modules against a temporary config_root."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat

import pytest

from ansible.module_utils.common import warnings as warnings_store
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pvesan.storage.plugins.module_utils import _pve_cluster_lock as pve_cluster_lock
from ansible_collections.pvesan.storage.plugins.modules import pve_storage, pve_storage_info

DEFAULT_CFG = ('dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n'
               '# default image store on LVM based installation\n'
               'lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n\n')
TOKEN = 'pvesan-token-0123456789abcdef'
PBS_KEY = '{"kdf": null, "created": "2026-11-01T00:00:00Z", "data": "c2VjcmV0", "fingerprint": "aa:bb"}'


@pytest.fixture
def root(tmp_path):
    os.makedirs(str(tmp_path / 'priv' / 'lock'))
    (tmp_path / 'storage.cfg').write_text(DEFAULT_CFG)
    yield str(tmp_path)
    lock = pve_cluster_lock._local_lock_path(str(tmp_path))
    if os.path.exists(lock):
        os.unlink(lock)


def run(module, capsys, check=False, diff=False, **args):
    warnings_store._global_warnings.clear()   # one module run per process on a real host
    if check:
        args['_ansible_check_mode'] = True
    if diff:
        args['_ansible_diff'] = True
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(capsys.readouterr().out)


def warnings(res):
    """The warning texts of a result (ansible-core 2.19 returns them as structured summaries)."""
    return [w['event']['msg'] if isinstance(w, dict) else w for w in res.get('warnings', [])]


def cfg_text(root):
    with open(os.path.join(root, 'storage.cfg')) as f:
        return f.read()


def test_create_then_idempotent(root, capsys):
    args = dict(name='iso', type='nfs', config_root=root, content=['iso', 'vztmpl'],
                options={'server': '10.0.0.10', 'export': '/space/iso', 'options': 'vers=3,soft'})
    res = run(pve_storage, capsys, **args)
    assert res['changed'] and res['created'] and not res['restart_needed']
    assert res['storage'] == {'type': 'nfs', 'server': '10.0.0.10', 'export': '/space/iso', 'path': '/mnt/pve/iso',
                              'options': 'vers=3,soft', 'content': ['iso', 'vztmpl']}
    section = ('nfs: iso\n\texport /space/iso\n\tpath /mnt/pve/iso\n\tserver 10.0.0.10\n'
               '\tcontent iso,vztmpl\n\toptions vers=3,soft\n')
    assert res['section'] == section
    assert cfg_text(root) == DEFAULT_CFG + section + '\n'
    args['content'] = ['vztmpl', 'iso']
    res = run(pve_storage, capsys, **args)
    assert not res['changed']
    assert cfg_text(root) == DEFAULT_CFG + section + '\n'
    assert os.listdir(os.path.join(root, 'priv', 'lock')) == []


def test_check_mode_and_diff_write_nothing(root, capsys):
    res = run(pve_storage, capsys, check=True, diff=True, name='local-lvm', config_root=root,
              content=['images'])
    assert res['changed']
    assert res['diff']['before'] == 'lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n'
    assert res['diff']['after'] == 'lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent images\n'
    assert cfg_text(root) == DEFAULT_CFG
    res = run(pve_storage, capsys, diff=True, name='local-lvm', config_root=root, content=['images'])
    assert res['changed']
    assert cfg_text(root) == DEFAULT_CFG.replace('\tcontent rootdir,images', '\tcontent images')


def test_purge_drops_undeclared_but_keeps_required(root, capsys):
    run(pve_storage, capsys, name='d1', type='dir', config_root=root, content=['iso'],
        options={'path': '/srv/d1', 'prune-backups': 'keep-last=3', 'mkdir': False})
    res = run(pve_storage, capsys, name='d1', type='dir', config_root=root, content=['iso'], purge=True)
    assert res['changed']
    assert res['storage'] == {'type': 'dir', 'path': '/srv/d1', 'content': ['iso']}
    assert not run(pve_storage, capsys, name='d1', type='dir', config_root=root, content=['iso'], purge=True)['changed']


def test_disable_is_a_bare_key_and_false_removes_it(root, capsys):
    res = run(pve_storage, capsys, name='local-lvm', config_root=root, disable=True)
    assert res['changed'] and res['section'] == 'lvmthin: local-lvm\n\tdisable\n\tthinpool data\n\tvgname pve\n\tcontent images,rootdir\n'
    assert not run(pve_storage, capsys, name='local-lvm', config_root=root, disable=True)['changed']
    res = run(pve_storage, capsys, name='local-lvm', config_root=root, disable=False)
    assert res['changed'] and 'disable' not in cfg_text(root)
    assert not run(pve_storage, capsys, name='local-lvm', config_root=root, disable=False)['changed']
    res = run(pve_storage, capsys, name='d2', type='dir', config_root=root, disable=False, options={'path': '/d2'})
    assert res['section'] == 'dir: d2\n\tpath /d2\n\tcontent images,rootdir\n'


def test_fixed_property_change_fails_and_file_is_untouched(root, capsys):
    res = run(pve_storage, capsys, name='local-lvm', type='lvmthin', config_root=root, options={'vgname': 'other'})
    assert res['failed']
    assert "'vgname'" in res['msg'] and 'fixed' in res['msg']
    assert cfg_text(root) == DEFAULT_CFG


@pytest.mark.parametrize('args, words', [
    (dict(name='x1', type='dir', options={'path': '/x', 'vgname': 'pve'}), "'vgname' is not valid"),
    (dict(name='x1', type='dir', options={'path': '/x', 'shared': 'perhaps'}), 'must be a boolean'),
    (dict(name='x1', type='lvm', content=['iso'], options={'vgname': 'vg'}), "content type 'iso'"),
    (dict(name='1x', type='dir', options={'path': '/x'}), 'storage ID'),
    (dict(name='x1', type='lvmthin', options={'vgname': 'pve'}), 'requires thinpool'),
    (dict(name='x1', type='dir', options={'path': '/x'}, auth_token=TOKEN), "has no secret 'auth_token'"),
    (dict(name='x1', options={'path': '/x'}), "set 'type'"),
    (dict(name='local-lvm', type='lvm', options={'vgname': 'pve'}), "type cannot change"),
    (dict(name='x1', type='dir', content=['iso'], options={'path': '/x', 'content': ['iso']}), 'both'),
])
def test_validation_fails_before_any_write(root, capsys, args, words):
    res = run(pve_storage, capsys, config_root=root, **args)
    assert res['failed'] and words in res['msg'], res['msg']
    assert cfg_text(root) == DEFAULT_CFG
    assert os.listdir(os.path.join(root, 'priv')) == ['lock']


def test_malformed_existing_file_fails_with_line_and_nothing_written(root, capsys):
    broken = DEFAULT_CFG.replace('\tvgname pve\n', '\tvgname pve\n\tvgname other\n')
    with open(os.path.join(root, 'storage.cfg'), 'w') as f:
        f.write(broken)
    res = run(pve_storage, capsys, name='d1', type='dir', config_root=root, options={'path': '/x'})
    assert res['failed'] and 'storage.cfg line 9:' in res['msg']
    assert cfg_text(root) == broken
    res = run(pve_storage_info, capsys, config_root=root)
    assert res['failed'] and 'storage.cfg line 9:' in res['msg']


def test_pvesan_secret_goes_to_priv_and_restart_is_flagged(root, capsys):
    args = dict(name='san1', type='pvesan', config_root=root, content=['images', 'rootdir'], auth_token=TOKEN,
                options={'api_url': 'https://10.89.1.10:8443/api', 'transport_encryption': 'tls',
                         'multipath': True, 'ssl_verify_peer': False})
    res = run(pve_storage, capsys, diff=True, **args)
    assert res['changed'] and res['restart_needed']
    pw = os.path.join(root, 'priv', 'storage', 'san1.pw')
    assert res['secrets_changed'] == [pw]
    with open(pw) as f:
        assert f.read() == TOKEN + '\n'
    assert stat.S_IMODE(os.stat(pw).st_mode) == 0o600
    text = cfg_text(root)
    assert TOKEN not in text and TOKEN not in json.dumps(res)
    assert ('pvesan: san1\n\tapi_url https://10.89.1.10:8443/api\n\tcontent images,rootdir\n\tmultipath 1\n'
            '\tshared 1\n\tssl_verify_peer 0\n\ttransport_encryption tls\n') in text
    res = run(pve_storage, capsys, **args)
    assert not res['changed'] and not res['restart_needed']
    args['auth_token'] = 'new-token'
    res = run(pve_storage, capsys, **args)
    assert res['changed'] and res['secrets_changed'] == [pw] and cfg_text(root) == text
    # info: secret file reported, never its content
    info = run(pve_storage_info, capsys, config_root=root)
    assert info['order'] == ['local', 'local-lvm', 'san1']
    assert info['secret_files'] == {'san1': [pw]} and 'new-token' not in json.dumps(info)
    assert info['storages']['san1']['transport_encryption'] == 'tls'
    # removal takes the secret file with it
    res = run(pve_storage, capsys, name='san1', state='absent', config_root=root)
    assert res['changed'] and res['secrets_changed'] == [pw] and not os.path.exists(pw)
    assert cfg_text(root) == DEFAULT_CFG
    assert not run(pve_storage, capsys, name='san1', state='absent', config_root=root)['changed']


@pytest.mark.parametrize('stype, option, value, relpath, content, options', [
    ('cifs', 'password', 's3cret', 'priv/storage/c1.pw', 'password=s3cret\n',
     {'server': '10.0.0.11', 'share': 'VMData', 'username': 'anna'}),
    ('pbs', 'password', 's3cret', 'priv/storage/c1.pw', 's3cret\n', {'server': 'pbs.example.com', 'datastore': 'main'}),
    ('pbs', 'encryption_key', PBS_KEY, 'priv/storage/c1.enc', PBS_KEY + '\n', {'server': 'pbs.example.com', 'datastore': 'main'}),
    ('rbd', 'keyring', '[client.admin]\n\tkey = AQ==\n', 'priv/ceph/c1.keyring', '[client.admin]\n\tkey = AQ==\n',
     {'monhost': '10.1.1.20'}),
    ('cephfs', 'keyring', 'AQBsecret==', 'priv/ceph/c1.secret', 'AQBsecret==\n', {'monhost': '10.1.1.20'}),
    ('esxi', 'password', 's3cret', 'priv/storage/c1.pw', 's3cret', {'server': 'esxi.example.com', 'username': 'root'}),
])
def test_secrets_of_every_type(root, capsys, stype, option, value, relpath, content, options):
    res = run(pve_storage, capsys, name='c1', type=stype, config_root=root, options=options, **{option: value})
    assert res['changed'], res
    path = os.path.join(root, relpath)
    with open(path) as f:
        assert f.read() == content
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert value.strip() not in cfg_text(root)
    if option == 'encryption_key':
        assert '\tencryption-key aa:bb\n' in cfg_text(root)   # the fingerprint, as PBSPlugin stores it
    assert not run(pve_storage, capsys, name='c1', type=stype, config_root=root, options=options,
                   **{option: value})['changed']
    run(pve_storage, capsys, name='c1', state='absent', config_root=root)
    assert not os.path.exists(path) and cfg_text(root) == DEFAULT_CFG


def test_purge_removes_secret_not_given(root, capsys):
    opts = {'server': '10.0.0.11', 'share': 'VMData', 'username': 'anna'}
    run(pve_storage, capsys, name='c1', type='cifs', config_root=root, options=opts, password='pw')
    res = run(pve_storage, capsys, name='c1', type='cifs', config_root=root, options=opts, purge=True)
    assert res['changed'] and not os.path.exists(os.path.join(root, 'priv', 'storage', 'c1.pw'))


def test_missing_storage_cfg_is_created(tmp_path, capsys):
    root = str(tmp_path)
    res = run(pve_storage, capsys, name='vg1', type='lvm', config_root=root, options={'vgname': 'vg1'})
    assert res['changed']
    assert cfg_text(root) == 'lvm: vg1\n\tvgname vg1\n\tcontent images\n\n'
    assert stat.S_IMODE(os.stat(os.path.join(root, 'storage.cfg')).st_mode) == 0o640
    os.unlink(pve_cluster_lock._local_lock_path(root))


def test_info_single_storage_and_redaction(root, capsys):
    with open(os.path.join(root, 'storage.cfg'), 'a') as f:
        f.write('cifs: c2\n\tserver 10.0.0.1\n\tshare s\n\tpassword leaked\n\n')
    info = run(pve_storage_info, capsys, config_root=root, name='c2')
    assert info['order'] == ['c2'] and not info['changed']
    assert info['storages']['c2']['password'] == 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'
    assert info['storages']['c2']['path'] == '/mnt/pve/c2'
    assert run(pve_storage_info, capsys, config_root=root, name='nope')['storages'] == {}


def test_info_reports_the_local_storage_proxmox_would_add(tmp_path, capsys):
    (tmp_path / 'storage.cfg').write_text('lvm: vg1\n\tvgname vg1\n\nfrob: x1\n\tkey v\n\n')
    info = run(pve_storage_info, capsys, config_root=str(tmp_path))
    assert info['local_implicit'] and info['order'] == ['vg1', 'x1']
    assert info['storages']['x1'] == {'type': 'frob', 'key': 'v'}
    assert 'frob' in info['warnings_found'][0]


def test_warns_when_the_pvesan_plugin_is_missing_on_a_real_node(root, capsys, monkeypatch, tmp_path):
    pvesm = tmp_path / 'pvesm'
    pvesm.write_text('')
    monkeypatch.setattr(pve_storage, 'PVESM', str(pvesm))
    monkeypatch.setattr(pve_storage, 'PVESAN_PLUGIN', str(tmp_path / 'PVESANPlugin.pm'))
    args = dict(name='san1', type='pvesan', config_root=root, options={'api_url': 'https://10.89.1.10:8443/api'})
    res = run(pve_storage, capsys, **args)
    assert 'PVESANPlugin.pm is missing' in str(res['warnings']), res['warnings']


# -- Proxmox VE 9.1 as it really is (issue findings 11-17) ----------------------------------------
def test_glusterfs_and_maxfiles_are_refused_for_pve9(root, capsys):
    """Findings 11, 13: PVE 9 has no glusterfs type and no maxfiles; nothing is written."""
    res = run(pve_storage, capsys, name='gl', type='glusterfs', config_root=root, options={'volume': 'gv0'})
    assert res['failed'] and 'glusterfs' in res['msg']
    res = run(pve_storage, capsys, name='d1', type='dir', config_root=root, options={'path': '/x', 'maxfiles': 3})
    assert res['failed'] and "Proxmox VE 9 removed 'maxfiles'" in res['msg'] and 'prune-backups' in res['msg']
    assert cfg_text(root) == DEFAULT_CFG


def test_pve9_properties_are_declared_and_survive_purge(root, capsys):
    """Finding 12."""
    res = run(pve_storage, capsys, name='d1', type='dir', config_root=root, content=['images'],
              options={'path': '/srv/d1', 'snapshot-as-volume-chain': True})
    assert res['changed'] and '\tsnapshot-as-volume-chain 1\n' in res['section'] and warnings(res) == []
    res = run(pve_storage, capsys, name='d1', config_root=root, content=['images', 'iso'], purge=True)
    assert res['changed'] and res['storage']['snapshot-as-volume-chain'] is True
    assert warnings(res) == []
    res = run(pve_storage, capsys, name='d1', config_root=root, options={'snapshot-as-volume-chain': False})
    assert res['failed'] and 'fixed' in res['msg']
    res = run(pve_storage, capsys, name='l1', type='lvm', config_root=root,
              options={'vgname': 'vg0', 'saferemove-stepsize': 16, 'snapshot-as-volume-chain': True})
    assert res['changed'] and '\tsaferemove-stepsize 16\n' in res['section']
    res = run(pve_storage, capsys, name='zi', type='zfs', config_root=root, content=['images'],
              options={'portal': '10.0.0.1', 'target': 'iqn.2003-01.org.x:t', 'pool': 'tank', 'blocksize': '8k',
                       'iscsiprovider': 'LIO', 'lio_tpg': 'tpg1', 'zfs-base-path': '/dev/zvol'})
    assert res['changed'] and '\tzfs-base-path /dev/zvol\n' in res['section']


def test_canonical_and_idempotent(root, capsys):
    """Finding 16: default content written at once, pvesan shared, nodes [] stable, unknown keys go
    on an edit, api_url fixed."""
    res = run(pve_storage, capsys, name='t1', type='lvmthin', config_root=root, options={'vgname': 'vg', 'thinpool': 'tp'})
    assert res['section'] == 'lvmthin: t1\n\tthinpool tp\n\tvgname vg\n\tcontent images,rootdir\n'
    assert not run(pve_storage, capsys, name='t1', config_root=root, nodes=[])['changed']
    assert not run(pve_storage, capsys, name='t1', config_root=root, nodes=[])['changed']
    san = dict(name='san', type='pvesan', config_root=root, auth_token=TOKEN, options={'api_url': 'https://a:8443'})
    res = run(pve_storage, capsys, **san)
    assert res['section'] == 'pvesan: san\n\tapi_url https://a:8443\n\tcontent images\n\tshared 1\n'
    assert not run(pve_storage, capsys, **san)['changed']
    res = run(pve_storage, capsys, **dict(san, shared=False))
    assert res['failed'] and 'always shared' in res['msg']
    moved = dict(san)
    moved['options'] = {'api_url': 'https://b:8443'}
    res = run(pve_storage, capsys, **moved)
    assert res['failed'] and "'api_url'" in res['msg'] and 'fixed' in res['msg']
    with open(os.path.join(root, 'storage.cfg'), 'a') as f:
        f.write('dir: d9\n\tpath /d9\n\tcontent iso\n\tcolour blue\n\n')
    assert not run(pve_storage, capsys, name='d9', config_root=root, content=['iso'])['changed']
    res = run(pve_storage, capsys, name='d9', config_root=root, content=['iso', 'backup'])
    assert res['changed'] and 'colour' not in res['section'] and 'colour' not in cfg_text(root)
    assert any("dropped 'colour'" in w for w in warnings(res))


def test_a_line_of_blanks_is_ignored_with_a_warning(root, capsys):
    """Finding 17: Proxmox warns and goes on; so does the module (the other sections are kept)."""
    text = DEFAULT_CFG.replace('\tvgname pve\n', '\tvgname pve\n \t \n')
    with open(os.path.join(root, 'storage.cfg'), 'w') as f:
        f.write(text)
    res = run(pve_storage, capsys, name='d1', type='dir', config_root=root, options={'path': '/x'})
    assert res['changed'] and any('line of blanks' in w for w in warnings(res))
    assert cfg_text(root).startswith(text)


def test_a_symlinked_storage_cfg_stays_a_symlink(root, capsys):
    """Finding 17."""
    real = os.path.join(root, 'real-storage.cfg')
    os.rename(os.path.join(root, 'storage.cfg'), real)
    os.symlink('real-storage.cfg', os.path.join(root, 'storage.cfg'))
    res = run(pve_storage, capsys, name='d1', type='dir', config_root=root, options={'path': '/x'})
    assert res['changed']
    assert os.path.islink(os.path.join(root, 'storage.cfg'))
    assert 'dir: d1' in open(real).read()


@pytest.mark.parametrize('key', ['password', 'keyring', 'auth_token', 'encryption-key', 'master-pubkey'])
def test_a_secret_inside_options_is_refused_and_never_echoed(root, capsys, key):
    """Finding 17: the whole result (incl. the -vvv invocation) has the value masked."""
    secret = 'S3cr3t-%s-value' % key
    res = run(pve_storage, capsys, name='p1', type='pbs', config_root=root,
              options={'server': 'pbs.example', 'datastore': 's', key: secret})
    assert res['failed'] and 'secret' in res['msg']
    assert secret not in json.dumps(res)
    assert cfg_text(root) == DEFAULT_CFG


def test_a_secret_inside_options_never_reaches_the_hosts_journal(root, capsys, monkeypatch):
    """The controller sends _ansible_no_log (false unless the task has no_log), which overrides a
    module's own no_log: the invocation logged to the journal must have the value masked anyway."""
    from ansible.module_utils.basic import AnsibleModule
    logged = []
    monkeypatch.setattr(AnsibleModule, 'log', lambda self, msg, log_args=None: logged.append((msg, log_args)))
    secret = 'S3cr3t-journal-value'
    res = run(pve_storage, capsys, name='p1', type='pbs', config_root=root, _ansible_no_log=False,
              options={'server': 'pbs.example', 'datastore': 's', 'password': secret})
    assert res['failed']
    assert logged and 'pbs.example' in repr(logged)  # the invocation was logged, and is useful
    assert secret not in repr(logged)


PEM = ('-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf\n'
       '9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END PUBLIC KEY-----\n')


@pytest.mark.parametrize('given', ['pem', 'base64'])
def test_pbs_master_pubkey_as_proxmox_stores_it(root, capsys, given):
    """Finding 15: the decoded PEM (plus a newline, as PBSPlugin writes it) in priv/storage/<id>.master.pem,
    `master-pubkey 1` in storage.cfg; without an encryption key it is refused as Proxmox refuses it."""
    import base64
    value = PEM if given == 'pem' else base64.b64encode(PEM.encode()).decode()
    args = dict(name='pbs1', type='pbs', config_root=root, options={'server': 'pbs.example', 'datastore': 's'})
    res = run(pve_storage, capsys, master_pubkey=value, **args)
    assert res['failed'] and 'only be used together' in res['msg']
    res = run(pve_storage, capsys, master_pubkey=value, encryption_key=PBS_KEY, **args)
    assert res['changed']
    assert '\tmaster-pubkey 1\n' in cfg_text(root) and PEM.split('\n')[1] not in cfg_text(root)
    with open(os.path.join(root, 'priv', 'storage', 'pbs1.master.pem')) as f:
        assert f.read() == PEM + '\n'
    assert not run(pve_storage, capsys, master_pubkey=value, encryption_key=PBS_KEY, **args)['changed']
    res = run(pve_storage, capsys, master_pubkey='not a key', encryption_key=PBS_KEY, **args)
    assert res['failed'] and 'PEM' in res['msg']
    res = run(pve_storage, capsys, encryption_key=PBS_KEY, purge=True, **args)
    assert res['changed'] and 'master-pubkey' not in cfg_text(root)
    assert not os.path.exists(os.path.join(root, 'priv', 'storage', 'pbs1.master.pem'))
