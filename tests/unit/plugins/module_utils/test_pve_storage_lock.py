# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The storage.cfg locks, and 20 real processes adding storages at the same time."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import multiprocessing
import json
import os
import time

import pytest

from ansible_collections.pvesan.storage.plugins.module_utils import _pve_cluster_lock as pve_cluster_lock
from ansible_collections.pvesan.storage.plugins.module_utils._pve_cluster_lock import LockError, StorageCfgLock
from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_cfg import (
    StorageCfgFile, StorageConfig, desired_props, plan_present,
)

WORKERS = 20


@pytest.fixture
def root(tmp_path):
    os.makedirs(str(tmp_path / 'priv' / 'lock'))
    (tmp_path / 'storage.cfg').write_text('dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n')
    yield str(tmp_path)
    os.unlink(pve_cluster_lock._local_lock_path(str(tmp_path)))


def add_storage(root, sid):
    """What the module does for state=present, with the same library calls."""
    store = StorageCfgFile(root)
    with StorageCfgLock(root, timeout=60) as lock:
        cfg = store.read()
        old, new = plan_present(cfg, sid, 'lvm', desired_props('lvm', sid, {'vgname': 'vg-' + sid, 'shared': True}))
        if new is not old:
            cfg.set(new)
            lock.check_time()
            store.write(cfg)


def _worker(root, sid, start):
    start.wait()
    add_storage(root, sid)


def _sampler(root, stop, queue):
    samples = bad = 0
    path = os.path.join(root, 'storage.cfg')
    while not stop.is_set():
        with open(path) as f:
            text = f.read()
        samples += 1
        try:
            StorageConfig.parse(text)
        except Exception:  # pylint: disable=broad-except
            bad += 1
    queue.put((samples, bad))


def test_twenty_processes_add_storages_at_once(root):
    ctx = multiprocessing.get_context('fork')
    start, stop, queue = ctx.Event(), ctx.Event(), ctx.Queue()
    sampler = ctx.Process(target=_sampler, args=(root, stop, queue))
    sampler.start()
    workers = [ctx.Process(target=_worker, args=(root, 'store%02d' % i, start)) for i in range(WORKERS)]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(120)
    stop.set()
    samples, bad = queue.get(timeout=60)
    sampler.join(30)

    assert [w.exitcode for w in workers] == [0] * WORKERS
    cfg = StorageCfgFile(root).read()
    assert sorted(cfg.order()) == sorted(['local'] + ['store%02d' % i for i in range(WORKERS)])
    print('%d versions of storage.cfg sampled during the run, all parsed' % samples)
    assert samples > 0 and bad == 0, '%d of %d sampled versions did not parse' % (bad, samples)
    assert os.listdir(os.path.join(root, 'priv', 'lock')) == []          # lock released
    assert sorted(os.listdir(root)) == ['priv', 'storage.cfg']           # no temp files left


def test_lock_is_a_directory_removed_on_exit(root):
    lockdir = os.path.join(root, 'priv', 'lock', 'file-storage_cfg')
    with StorageCfgLock(root):
        assert os.path.isdir(lockdir)
    assert not os.path.exists(lockdir)


def test_held_lock_times_out_with_a_clear_message(root):
    os.mkdir(os.path.join(root, 'priv', 'lock', 'file-storage_cfg'))
    with pytest.raises(LockError) as e:
        with StorageCfgLock(root, timeout=0.5):
            pass
    assert 'file-storage_cfg' in str(e.value) and 'timeout' in str(e.value)
    assert os.path.isdir(os.path.join(root, 'priv', 'lock', 'file-storage_cfg'))   # not ours to remove


def test_stale_lock_older_than_pmxcfs_lifetime_is_expired(root, monkeypatch):
    lockdir = os.path.join(root, 'priv', 'lock', 'file-storage_cfg')
    os.mkdir(lockdir)
    # a lock nobody touched for longer than pmxcfs's lifetime (its ctime cannot be set back, the clock can)
    later = time.time() + pve_cluster_lock.PMXCFS_LOCK_LIFETIME + 5
    monkeypatch.setattr(pve_cluster_lock.time, 'time', lambda: later)
    with StorageCfgLock(root, timeout=5):
        assert os.path.isdir(lockdir)
    assert not os.path.exists(lockdir)


def test_unlock_request_of_a_waiting_proxmox_process_is_no_age(root):
    """A Proxmox process waiting for the lock sends utime(0, 0) to it (the real cfs_lock_file did,
    facts "cfs_lock"); on a plain directory that zero mtime must not make a held lock look stale."""
    facts = json.load(open(os.path.join(os.path.dirname(__file__), 'fixtures', 'proxmox', 'pve-9.1.json')))
    assert set(facts['cfs_lock']['mtimes_seen_while_waiting']) == {0}
    assert facts['cfs_lock']['lock_left_in_place']
    lockdir = os.path.join(root, 'priv', 'lock', 'file-storage_cfg')
    os.mkdir(lockdir)           # held by someone
    os.utime(lockdir, (0, 0))   # the waiting Proxmox process's unlock request
    with pytest.raises(LockError):
        with StorageCfgLock(root, timeout=0.5):
            pass
    assert os.path.isdir(lockdir)   # not stolen


def test_work_longer_than_proxmox_allows_aborts(root):
    with StorageCfgLock(root) as lock:
        lock.acquired_at -= pve_cluster_lock.WORK_TIMEOUT + 1
        with pytest.raises(LockError) as e:
            lock.check_time()
    assert 'without writing' in str(e.value)


def test_local_lock_serialises_processes_of_one_node(root):
    first = StorageCfgLock(root)
    first._lock_local(time.monotonic() + 1)
    try:
        with pytest.raises(LockError) as e:
            with StorageCfgLock(root, timeout=0.3):
                pass
        assert 'local lock' in str(e.value)
    finally:
        first._unlock_local()


def test_missing_lock_dir_is_created(tmp_path):
    (tmp_path / 'priv').mkdir()
    with StorageCfgLock(str(tmp_path)):
        assert (tmp_path / 'priv' / 'lock' / 'file-storage_cfg').is_dir()
    os.unlink(pve_cluster_lock._local_lock_path(str(tmp_path)))


def test_pmxcfs_is_recognised_by_its_fuse_mount(tmp_path):
    mounts = tmp_path / 'mounts'
    mounts.write_text('/dev/sda1 / ext4 rw 0 0\n/dev/fuse /etc/pve fuse rw,nosuid,nodev 0 0\n')
    assert pve_cluster_lock._is_pmxcfs('/etc/pve', str(mounts))
    assert pve_cluster_lock._is_pmxcfs('/etc/pve/priv', str(mounts))
    assert not pve_cluster_lock._is_pmxcfs('/etc/pvex', str(mounts))
    assert not pve_cluster_lock._is_pmxcfs('/srv', str(mounts))


def test_on_pmxcfs_a_stale_lock_is_left_to_pmxcfs(root):
    """pmxcfs expires locks itself on the unlock request; we must not rmdir a lock we do not hold."""
    lockdir = os.path.join(root, 'priv', 'lock', 'file-storage_cfg')
    os.mkdir(lockdir)
    old = time.time() - pve_cluster_lock.PMXCFS_LOCK_LIFETIME - 5
    os.utime(lockdir, (old, old))
    lock = StorageCfgLock(root, timeout=0.5)
    lock.pmxcfs = True
    with pytest.raises(LockError):
        with lock:
            pass
    assert os.path.isdir(lockdir)
    assert os.stat(lockdir).st_mtime == 0   # the "cfs unlock request" utime(0, 0) was sent
