# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pve_volume against a real pvesan-service (file pool on a loop-mounted XFS with reflink, a
private tgtd), started and removed by the fixture below; storage.cfg and the token in a temp
config_root. The attach/detach paths, which need the kernel iSCSI initiator, run against
iscsiadm output recorded from open-iscsi in the kernel VM (see ISCSIADM_SESSION)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.pvesan.storage.plugins.modules import pve_volume
from ansible_collections.pvesan.storage.tests.unit.plugins.module_utils.test_zfs_pool_kernel_vm import Recording

MiB = 1024 * 1024
SID = 'san'


def _bin(name):
    for d in (os.path.dirname(sys.executable), '/usr/local/bin'):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return shutil.which(name)


def _usable():
    tools = ('tgtd', 'tgtadm', 'mkfs.xfs', 'openssl')
    return os.geteuid() == 0 and _bin('pvesan-service') and all(shutil.which(t) for t in tools)


def _free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait(pred, what, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise RuntimeError('timed out waiting for %s' % what)


def _die_with_parent():
    """preexec_fn: the daemons die with the test process, even when it is killed (no orphans)."""
    import ctypes
    import signal
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG


class Service:
    """pvesan-service + tgtd + XFS pool in a temp dir; everything removed by stop()."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='pvesan-pve-volume-')
        self.procs = []
        self.mounted = None
        self.control = None

    def start(self):
        d = self.dir
        subprocess.run(['truncate', '-s', '1G', d + '/pool.img'], check=True)
        subprocess.run(['mkfs.xfs', '-q', '-m', 'reflink=1', d + '/pool.img'], check=True)
        os.mkdir(d + '/mnt')
        subprocess.run(['mount', '-o', 'loop', d + '/pool.img', d + '/mnt'], check=True)
        self.mounted = d + '/mnt'
        os.mkdir(d + '/mnt/pool')
        port = _free_port()
        self.control = 20000 + port % 12000   # tgtadm -C takes at most 32767
        self.portal = '127.0.0.1:%d' % port
        self.procs.append(subprocess.Popen(['tgtd', '-f', '-C', str(self.control), '--iscsi', 'portal=' + self.portal],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           preexec_fn=_die_with_parent))
        _wait(lambda: self.tgtadm('--mode', 'system', '--op', 'show').returncode == 0, 'tgtd')
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                        '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
                        '-keyout', d + '/tls.key', '-out', d + '/tls.crt'], check=True, capture_output=True)
        self.ca = d + '/tls.crt'
        self.admin_token = 'pvs_admin_' + os.urandom(20).hex()
        with open(d + '/admin.token', 'w') as f:
            f.write(self.admin_token + '\n')
        api_port = _free_port()
        config = {
            'listen': '127.0.0.1:%d' % api_port, 'tls_cert': d + '/tls.crt', 'tls_key': d + '/tls.key',
            'database': 'sqlite:///%s/state.db' % d, 'admin_token_file': d + '/admin.token',
            'secret_key_file': d + '/secret.key',
            'portals': [self.portal], 'target': {'driver': 'tgt', 'control_port': self.control},
            'pools': [{'name': 'pool1', 'kind': 'file', 'options': {'path': d + '/mnt/pool'}, 'tags': ['ssd']}],
            'service_types': [{'name': 'default', 'default': True}], 'log_format': 'text', 'access_log': False,
        }
        with open(d + '/service.yaml', 'w') as f:
            json.dump(config, f)   # JSON is YAML
        log = open(d + '/service.log', 'w')
        self.procs.append(subprocess.Popen([_bin('pvesan-service'), '--config', d + '/service.yaml'], stdout=log, stderr=log,
                                           preexec_fn=_die_with_parent))
        self.api_url = 'https://127.0.0.1:%d' % api_port
        _wait(lambda: self.cli('health') is not None, 'pvesan-service')
        self.cli('tenant', 'create', 'cluster1')
        self._watchdog()
        self.token = self.cli('token', 'create', 'proxmox', '--for-tenant', 'cluster1')['token']

    def _watchdog(self):
        """ansible-test units runs every test in a forked child that exits without fixture teardown:
        the daemons die with it (PR_SET_PDEATHSIG), and this detached watcher then unmounts the pool
        and removes the directory. After a normal stop() it finds nothing left to do."""
        script = ('while kill -0 %d 2>/dev/null; do sleep 0.5; done; '
                  'tgtadm -C %d --mode system --op delete >/dev/null 2>&1; '
                  'for i in 1 2 3 4 5 6 7 8 9 10; do mountpoint -q %s || break; umount %s 2>/dev/null || sleep 1; done; '
                  'rm -f /var/run/tgtd/socket.%d /var/run/tgtd/socket.%d.lock; rm -rf %s'
                  % (os.getpid(), self.control, self.mounted, self.mounted, self.control, self.control, self.dir))
        subprocess.Popen(['sh', '-c', script], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def tgtadm(self, *args):
        return subprocess.run(['tgtadm', '-C', str(self.control), '--lld', 'iscsi'] + list(args), capture_output=True, text=True, check=False)

    def targets(self):
        out = self.tgtadm('--mode', 'target', '--op', 'show').stdout
        return [line.split(': ', 1)[1] for line in out.splitlines() if line.startswith('Target ')]

    def cli(self, *args):
        env = dict(os.environ, PVESAN_API_URL=self.api_url, PVESAN_TOKEN=self.admin_token, PVESAN_CA=self.ca,
                   PVESAN_CONFIG='/dev/null')
        r = subprocess.run([_bin('pvesan'), '--json'] + list(args), env=env, capture_output=True, text=True, check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def stop(self):
        if self.dir is None:
            return
        for proc in reversed(self.procs):
            if proc.args[0] == 'tgtd' and shutil.which('tgtadm'):
                self.tgtadm('--mode', 'system', '--op', 'update', '--name', 'State', '-v', 'offline')
                self.tgtadm('--mode', 'system', '--op', 'delete')
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.control:
            for suffix in ('', '.lock'):
                if os.path.exists('/var/run/tgtd/socket.%d%s' % (self.control, suffix)):
                    os.unlink('/var/run/tgtd/socket.%d%s' % (self.control, suffix))
        if self.mounted:
            subprocess.run(['umount', self.mounted], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


# Session scope: pytest-xdist (ansible-test units -n auto) would otherwise start a service each
# time a worker comes back to this module; atexit covers a session that ends without teardown.
@pytest.fixture(scope='session')
def service():
    if not _usable():
        pytest.skip('needs root, tgtd, mkfs.xfs, openssl and the pvesan-service package (pip install -e service/)')
    svc = Service()
    atexit.register(svc.stop)
    try:
        svc.start()
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def root(tmp_path, service):
    os.makedirs(str(tmp_path / 'priv' / 'storage'))
    (tmp_path / 'storage.cfg').write_text(
        'dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n'
        'pvesan: %s\n\tapi_url %s\n\tcontent images\n\tshared 1\n\tssl_verify_peer 1\n\n'
        'pvesan: down\n\tapi_url https://127.0.0.1:1\n\tcontent images\n\n' % (SID, service.api_url))
    for sid in (SID, 'down'):
        (tmp_path / 'priv' / 'storage' / ('%s.pw' % sid)).write_text(service.token + '\n')
    return str(tmp_path)


def run(capsys, root, service, check=False, diff=True, **args):
    args = dict(args, config_root=root, ca_path=service.ca, _ansible_check_mode=check, _ansible_diff=diff)
    args.setdefault('storage', SID)
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            pve_volume.main()
    out = capsys.readouterr().out
    assert service.token not in out   # the storage token never reaches the output
    return json.loads(out)


def test_allocate_idempotent_check_and_diff(capsys, root, service):
    res = run(capsys, root, service, check=True, name='vm-100-disk-0', size='64M')
    assert res['changed'] and res['size'] == 64 * MiB
    assert res['diff'] == {'before': {}, 'after': {'name': 'vm-100-disk-0', 'size': 64 * MiB, 'snapshots': []}}
    assert service.cli('--tenant', 'cluster1', 'volume', 'list') == []   # check mode created nothing

    res = run(capsys, root, service, name='vm-100-disk-0', size='64M')
    assert res['changed'] and res['volid'] == 'san:vm-100-disk-0' and res['size'] == 64 * MiB
    assert res['path'].startswith('iscsi://%s/iqn.' % service.portal) and res['path'].endswith('/1')
    assert res['volume']['export']['iqn'] in service.targets()

    res = run(capsys, root, service, name='vm-100-disk-0', size='64M')
    assert not res['changed'] and res['diff']['before'] == res['diff']['after']


def test_next_free_name(capsys, root, service):
    first = run(capsys, root, service, vmid=200, size=16 * MiB)
    second = run(capsys, root, service, vmid=200, size=16 * MiB)
    assert (first['name'], second['name']) == ('vm-200-disk-0', 'vm-200-disk-1')
    for name in (first['name'], second['name']):
        run(capsys, root, service, name=name, state='absent')


def test_grow_only(capsys, root, service):
    run(capsys, root, service, name='vm-101-disk-0', size='32M')
    res = run(capsys, root, service, name='vm-101-disk-0', size='48M')
    assert res['changed'] and res['size'] == 48 * MiB
    assert res['diff']['before']['size'] == 32 * MiB and res['diff']['after']['size'] == 48 * MiB
    res = run(capsys, root, service, name='vm-101-disk-0', size='16M')
    assert not res['changed'] and res['size'] == 48 * MiB
    assert 'never shrunk' in json.dumps(res.get('warnings')), res
    run(capsys, root, service, name='vm-101-disk-0', state='absent')


def test_snapshots_and_rollback(capsys, root, service):
    run(capsys, root, service, name='vm-102-disk-0', size='16M')
    res = run(capsys, root, service, name='vm-102-disk-0', snapshot='snap1', state='snapshot')
    assert res['changed'] and res['snapshots'] == ['snap1']
    assert not run(capsys, root, service, name='vm-102-disk-0', snapshot='snap1', state='snapshot')['changed']
    assert run(capsys, root, service, name='vm-102-disk-0', snapshot='snap1', state='rollback')['changed']
    res = run(capsys, root, service, name='vm-102-disk-0', snapshot='nosuch', state='rollback')
    assert res['failed'] and "has no snapshot 'nosuch'" in res['msg']
    res = run(capsys, root, service, name='vm-102-disk-0', snapshot='snap1', state='snapshot_absent')
    assert res['changed'] and res['snapshots'] == []
    assert not run(capsys, root, service, name='vm-102-disk-0', snapshot='snap1', state='snapshot_absent')['changed']
    run(capsys, root, service, name='vm-102-disk-0', state='absent')


def test_clone_from_template(capsys, root, service):
    run(capsys, root, service, name='base-300-disk-0', size='16M')
    res = run(capsys, root, service, name='vm-301-disk-0', clone_from='base-300-disk-0')
    assert res['changed'] and res['size'] == 16 * MiB and res['volume']['parent'] == 'base-300-disk-0'
    assert not run(capsys, root, service, name='vm-301-disk-0', clone_from='base-300-disk-0')['changed']
    run(capsys, root, service, name='vm-302-disk-0', size='16M')
    res = run(capsys, root, service, name='vm-303-disk-0', clone_from='vm-302-disk-0')
    assert res['failed'] and 'not a template' in res['msg']
    for name in ('vm-301-disk-0', 'base-300-disk-0', 'vm-302-disk-0'):
        run(capsys, root, service, name=name, state='absent')


def test_free_removes_export(capsys, root, service):
    res = run(capsys, root, service, name='vm-103-disk-0', size='16M')
    iqn = res['volume']['export']['iqn']
    assert run(capsys, root, service, check=True, name='vm-103-disk-0', state='absent')['changed']
    assert iqn in service.targets()   # check mode freed nothing
    res = run(capsys, root, service, name='vm-103-disk-0', state='absent')
    assert res['changed'] and res['diff']['after'] == {}
    assert iqn not in service.targets()
    assert not run(capsys, root, service, name='vm-103-disk-0', state='absent')['changed']


# One test for all error cases: ansible-test runs each test in a fork with its own service.
ERRORS = [
    (dict(name='vm-100-disk-0', size='ten gigs'), "size 'ten gigs' is not a size"),
    (dict(name='vm-100-disk-0', size=0), 'is not a size'),
    (dict(name='disk0', size='1G'), "not in Proxmox's naming"),
    (dict(name='vm-100-disk-0', vmid=101, size='1G'), 'belongs to VM 100'),
    (dict(storage='nosuch', name='vm-100-disk-0', size='1G'), "unknown storage 'nosuch'"),
    (dict(storage='local', name='vm-100-disk-0', size='1G'), 'needs pvesm'),
    (dict(storage='down', name='vm-100-disk-0', size='1G'), "storage 'down' is down: cannot reach"),
    (dict(name='vm-100-disk-9', snapshot='s', state='snapshot'), 'does not exist'),
    (dict(name='vm-100-disk-9', state='rollback'), 'needs snapshot'),
    (dict(vmid=100), 'size is required'),
]


def test_clear_errors(capsys, root, service):
    for args, message in ERRORS:
        res = run(capsys, root, service, **args)
        assert res['failed'] and message in res['msg'], (args, res['msg'])


# `iscsiadm -m session` and friends RECORDED from open-iscsi 2.1.8 (Debian 12) logged in to a tgtd
# from the kernel VM (fixtures/iscsi/kernel-vm, SOURCES.md there; `make kernel-vm-record SECTIONS=iscsi`).
ISCSI = Recording(os.path.join(os.path.dirname(__file__), 'fixtures', 'iscsi', 'kernel-vm'))
REC_IQN = 'iqn.2026-11.org.pvesan:default.v-0a1b2c3d4e5f6071'
REC_P1, REC_P2 = '10.0.2.2:13291', '10.0.2.2:13292'


def ISCSIADM_SESSION(portal, iqn):
    """The recorded one-session line, for this test's portal and target instead of the VM's."""
    return ISCSI.out('session-one').replace(REC_P1, portal).replace(REC_IQN, iqn)


def test_recorded_sessions_and_device_names():
    assert ISCSI.answer('session-none') == (21, '', 'iscsiadm: No active sessions.\n')
    assert pve_volume.logged_in(ISCSI.out('session-one'), [REC_P1, REC_P2], REC_IQN) == [REC_P1]
    assert pve_volume.logged_in(ISCSI.out('session-two'), [REC_P1, REC_P2], REC_IQN) == [REC_P1, REC_P2]
    assert pve_volume.logged_in(ISCSI.out('session-two'), [REC_P1], REC_IQN + '-other') == []
    assert pve_volume.logged_in(ISCSI.out('session-two'), ['10.0.2.2:1329'], REC_IQN) == []
    # the commands the module runs, as recorded, and what they answer
    node = ['iscsiadm', '-m', 'node', '-T', REC_IQN, '-p', REC_P1]
    assert ISCSI.argv('node-new-1') == node + ['-o', 'new'] and ISCSI.rc('node-new-1') == 0
    assert ISCSI.argv('login-1') == node + ['--login'] and ISCSI.rc('login-1') == 0
    assert ISCSI.rc('node-new-1-again') == 0  # -o new over an existing node record is fine
    assert ISCSI.rc('login-1-again') == 15  # a second login fails: the module checks the sessions first
    assert ISCSI.argv('logout-1') == node + ['--logout'] and ISCSI.rc('logout-1') == 0
    assert ISCSI.argv('node-delete-1') == node + ['-o', 'delete'] and ISCSI.rc('node-delete-1') == 0
    assert ISCSI.rc('logout-not-logged-in') == 21
    # the by-path names the module returns are the links udev made, one per portal
    listing = ISCSI.out('by-path-two.ls')
    for portal in (REC_P1, REC_P2):
        assert ' ip-%s-iscsi-%s-lun-1 -> ../../sd' % (portal, REC_IQN) in listing


def test_recorded_multipath_map_is_named_by_wwid():
    # user_friendly_names no (the multipath role): the map is /dev/mapper/<WWID>, the name the
    # Proxmox plugin looks for. tgt derives that WWID (VPD 0x83, NAA 6) from the target id and
    # LUN only (0e00000000010001 = tid 1, lun 1), not from the serial the service sets.
    wwid = ISCSI.out('scsi_id').strip()
    assert wwid == '360000000000000000e00000000010001'
    assert ISCSI.out('multipath-ll').startswith(wwid + ' dm-0 PVESAN,volume\n')
    assert ' %s -> ../dm-0\n' % wwid in ISCSI.out('mapper.ls')
    assert ISCSI.argv('multipath-flush') == ['multipath', '-f', wwid] and ISCSI.rc('multipath-flush') == 0


def test_attach_and_detach_with_open_iscsi(capsys, root, service, monkeypatch):
    vol = run(capsys, root, service, name='vm-104-disk-0', size='16M')['volume']
    iqn, portal = vol['export']['iqn'], service.portal
    calls, sessions = [], {'out': ''}

    def fake_run(self, args, check_rc=False, **kw):
        calls.append(args[1:])
        if args[1:] == ['-m', 'session']:
            return (0, sessions['out'], '') if sessions['out'] else ISCSI.answer('session-none')
        return 0, '', ''

    monkeypatch.setattr(pve_volume.AnsibleModule, 'get_bin_path', lambda self, name, required=False, opt_dirs=None: '/sbin/' + name)
    monkeypatch.setattr(pve_volume.AnsibleModule, 'run_command', fake_run)
    res = run(capsys, root, service, name='vm-104-disk-0', state='attached')
    assert res['changed'] and res['path'] == '/dev/disk/by-path/ip-%s-iscsi-%s-lun-1' % (portal, iqn)
    assert ['-m', 'node', '-T', iqn, '-p', portal, '--login'] in calls
    sessions['out'] = ISCSIADM_SESSION(portal, iqn)
    del calls[:]
    assert not run(capsys, root, service, name='vm-104-disk-0', state='attached')['changed']
    assert not any('--login' in c for c in calls)
    res = run(capsys, root, service, name='vm-104-disk-0', state='detached')
    assert res['changed'] and ['-m', 'node', '-T', iqn, '-p', portal, '--logout'] in calls
    monkeypatch.undo()
    run(capsys, root, service, name='vm-104-disk-0', state='absent')
