# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""iscsi_target (tgt backend) end to end: a private tgtd on its own control port and portal,
started and stopped here; real libiscsi clients (iscsi-inq) and qemu-io as initiators."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import socket
import subprocess
import time

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.pvesan.storage.plugins.modules import iscsi_target as mod
from ansible_collections.pvesan.storage.plugins.modules import iscsi_target_info as info_mod

TOOLS = ('tgtd', 'tgtadm', 'tgt-admin', 'qemu-io', 'iscsi-inq')
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not all(shutil.which(t) for t in TOOLS),
                                reason='needs root, tgt, qemu-utils/qemu-block-extra and libiscsi-bin')
IQN = 'iqn.2026-11.io.pvesan:test.module'
INITIATOR = 'iqn.2026-11.io.pvesan:test.initiator'


def free_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class Tgtd(object):
    """tgtd -f -C <control> --iscsi portal=127.0.0.1:<port>, never the system tgtd (control 0)."""

    def __init__(self):
        self.port = self.control = None
        self.proc = None

    def pick_ports(self):
        self.port = free_port()
        # tgtd takes control ports up to 32767; pick one no other tgtd holds.
        self.control = next(c for c in range(23000 + self.port % 5000, 32000)
                            if not os.path.exists('/var/run/tgtd/socket.%d' % c))

    def tgtadm(self, *args):
        return subprocess.run(['tgtadm', '-C', str(self.control), '--lld', 'iscsi'] + list(args),
                              capture_output=True, text=True, check=False)

    def start(self, keep_ports=False):
        """Start tgtd; on a port clash with a parallel test (tgtd exits), try other ports."""
        for _attempt in range(5):
            if not keep_ports:
                self.pick_ports()
            self.proc = subprocess.Popen(['tgtd', '-f', '-C', str(self.control), '--iscsi',
                                          'portal=127.0.0.1:%d' % self.port],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _i in range(200):
                if self.proc.poll() is not None:
                    break
                if self.tgtadm('--mode', 'system', '--op', 'show').returncode == 0:
                    return
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.kill()
        raise RuntimeError('tgtd did not start')

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        for suffix in ('', '.lock'):
            path = '/var/run/tgtd/socket.%d%s' % (self.control, suffix)
            if os.path.exists(path):
                os.unlink(path)

    def show(self):
        return self.tgtadm('--mode', 'target', '--op', 'show').stdout

    def url(self, lun=1, user=None, password=None, query=''):
        auth = '%s%%%s@' % (user, password) if user else ''
        return 'iscsi://%s127.0.0.1:%d/%s/%d%s' % (auth, self.port, IQN, lun, query)


@pytest.fixture
def tgtd():
    daemon = Tgtd()
    daemon.start()
    yield daemon
    daemon.kill()


@pytest.fixture
def disks(tmp_path):
    paths = []
    for name in ('a.img', 'b.img'):
        path = tmp_path / name
        with open(str(path), 'wb') as f:
            f.truncate(16 * 1024 * 1024)
        paths.append(str(path))
    return paths


def run(capsys, module, args, check=False):
    with patch_module_args(dict(args, _ansible_check_mode=check, _ansible_diff=True)):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(capsys.readouterr().out)


def inq(url, initiator=None):
    argv = ['iscsi-inq'] + (['-i', initiator] if initiator else []) + [url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def base(tgtd, tmp_path, **kw):
    return dict(iqn=IQN, tgt_control_port=tgtd.control, config_dir=str(tmp_path / 'conf.d'), **kw)


def test_create_check_mode_then_idempotent(capsys, tgtd, tmp_path, disks):
    args = base(tgtd, tmp_path, luns=[{'path': disks[0], 'serial': 'pvesan0001', 'vendor': 'PVESAN',
                                       'product': 'VDISK', 'write_cache': False}],
                attributes={'MaxRecvDataSegmentLength': 65536})
    res = run(capsys, mod, args, check=True)
    assert res['changed'] and 'target %s created (tid 1)' % IQN in res['changes']
    assert any('--op new --tid 1 --targetname ' + IQN in c for c in res['commands'])
    assert IQN not in tgtd.show() and not os.path.exists(res['config_file'])

    res = run(capsys, mod, args)
    assert res['changed'] and res['target']['luns'][0]['serial'] == 'pvesan0001'
    out = inq(tgtd.url()).stdout
    assert 'PVESAN' in out and 'VDISK' in out
    assert 'MaxRecvDataSegmentLength=65536' in tgtd.tgtadm('--mode', 'target', '--op', 'show', '--tid', '1').stdout
    assert oct(os.stat(res['config_file']).st_mode & 0o777) == '0o600'

    again = run(capsys, mod, args)
    assert not again['changed'] and again['commands'] == [] and again['changes'] == []


def test_add_lun_keeps_logged_in_session(capsys, tgtd, tmp_path, disks):
    run(capsys, mod, base(tgtd, tmp_path, luns=[{'path': disks[0]}]))
    # qemu-io in interactive mode keeps its iSCSI session open while it waits on stdin.
    client = subprocess.Popen(['qemu-io', '-f', 'raw', tgtd.url()], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _i in range(200):
            if 'I_T nexus:' in tgtd.show():
                break
            time.sleep(0.05)
        nexus = [line.strip() for line in tgtd.show().splitlines() if 'I_T nexus:' in line]
        assert len(nexus) == 1

        res = run(capsys, mod, base(tgtd, tmp_path, luns=[{'path': disks[0]}, {'path': disks[1]}]))
        assert res['changes'][0] == 'lun 2 created'
        assert [line.strip() for line in tgtd.show().splitlines() if 'I_T nexus:' in line] == nexus
        assert inq(tgtd.url(lun=2)).returncode == 0
        out, _err = client.communicate('write -P 0x5a 0 4k\nread -P 0x5a 0 4k\nquit\n', timeout=60)
        assert 'Pattern verification failed' not in out and out.count('4 KiB') >= 2, out
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


def test_chap_and_mutual_chap_enforced(capsys, tgtd, tmp_path, disks):
    args = base(tgtd, tmp_path, luns=[{'path': disks[0]}],
                chap={'user': 'pve', 'password': 'secret-in-0001'},
                mutual_chap={'user': 'storage1', 'password': 'secret-out-0001'})
    res = run(capsys, mod, args)
    assert 'secret-in-0001' not in json.dumps(res['diff']) and '********' in json.dumps(res['diff'])
    assert inq(tgtd.url()).returncode != 0
    assert inq(tgtd.url(user='pve', password='wrong-secret-01')).returncode != 0
    assert inq(tgtd.url(user='pve', password='secret-in-0001')).returncode == 0
    good = '?target_user=storage1&target_password=secret-out-0001'
    bad = '?target_user=storage1&target_password=wrong-secret-01'
    assert inq(tgtd.url(user='pve', password='secret-in-0001', query=good)).returncode == 0
    assert inq(tgtd.url(user='pve', password='secret-in-0001', query=bad)).returncode != 0
    assert not run(capsys, mod, args)['changed']
    # A new password is applied (tgtd cannot show it: the persistent file tells it changed).
    res = run(capsys, mod, dict(args, chap={'user': 'pve', 'password': 'secret-in-0002'}))
    assert res['changed']
    assert inq(tgtd.url(user='pve', password='secret-in-0002', query=good)).returncode == 0
    assert inq(tgtd.url(user='pve', password='secret-in-0001', query=good)).returncode != 0


def test_initiator_acl_by_name(capsys, tgtd, tmp_path, disks):
    run(capsys, mod, base(tgtd, tmp_path, luns=[{'path': disks[0]}], initiators=[INITIATOR]))
    assert inq(tgtd.url(), INITIATOR).returncode == 0
    assert inq(tgtd.url(), 'iqn.2026-11.io.pvesan:test.intruder').returncode != 0


def test_tgtd_restart_keeps_target(capsys, tgtd, tmp_path, disks):
    args = base(tgtd, tmp_path, luns=[{'path': disks[0], 'serial': 'pvesan0002', 'vendor': 'PVESAN'},
                                      {'path': disks[1], 'lun': 3, 'readonly': True}],
                chap={'user': 'pve2', 'password': 'secret-in-0003'})
    conf = run(capsys, mod, args)['config_file']
    tgtd.kill()
    tgtd.start(keep_ports=True)  # the same tgtd again, as after a service restart
    assert IQN not in tgtd.show()
    # What tgt.service does after starting tgtd.
    subprocess.run(['tgt-admin', '-C', str(tgtd.control), '-e', '-c', conf], check=True, capture_output=True)
    show = tgtd.show()
    assert IQN in show and disks[1] in show and 'pvesan0002' in show and 'pve2' in show
    assert inq(tgtd.url(user='pve2', password='secret-in-0003')).returncode == 0
    res = run(capsys, mod, args)
    assert not res['changed'], res['changes']


def test_absent_and_info(capsys, tgtd, tmp_path, disks):
    args = base(tgtd, tmp_path, luns=[{'path': disks[0]}])
    conf = run(capsys, mod, args)['config_file']
    info = run(capsys, info_mod, dict(tgt_control_port=tgtd.control))
    assert [t['iqn'] for t in info['targets']] == [IQN]
    assert info['targets'][0]['luns'][0]['path'] == disks[0]
    assert run(capsys, mod, dict(args, state='absent'), check=True)['changed'] and IQN in tgtd.show()
    res = run(capsys, mod, dict(args, state='absent'))
    assert res['changed'] and IQN not in tgtd.show() and not os.path.exists(conf)
    assert not run(capsys, mod, dict(args, state='absent'))['changed']


def test_errors_say_what_to_fix(capsys, tgtd, tmp_path, disks):
    res = run(capsys, mod, base(tgtd, tmp_path, luns=[{'path': disks[0], 'lun': 0}]))
    assert res['failed'] and 'LUN 0 is the tgt controller' in res['msg']
    res = run(capsys, mod, base(tgtd, tmp_path, luns=[{'path': str(tmp_path / 'missing.img')}]))
    assert res['failed'] and 'does not exist' in res['msg']
    res = run(capsys, mod, dict(base(tgtd, tmp_path), iqn='not-an-iqn'))
    assert res['failed'] and 'invalid target name' in res['msg']
    res = run(capsys, mod, dict(base(tgtd, tmp_path), tgt_control_port=tgtd.control + 1))
    assert res['failed'] and 'is it running' in res['msg']
