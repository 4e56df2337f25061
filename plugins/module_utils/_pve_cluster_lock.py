# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster lock Proxmox takes around storage.cfg edits, plus a node-local lock.

Proxmox (pve-cluster, PVE::Cluster::cfs_lock via cfs_lock_file('storage.cfg')):
  * the lock is the directory <config_root>/priv/lock/file-storage_cfg, taken with mkdir;
  * acquiring waits up to 10 s, retrying every second; each failed try sends the
    "cfs unlock request" utime(0, 0, dir), on which pmxcfs drops a lock older than its
    hard lifetime of 120 s;
  * the work inside is killed after 60 s (alarm(60)), leaving pmxcfs 60 s of margin.
On a plain directory (the lab, tests) nobody expires locks, so we apply pmxcfs's 120 s
lifetime ourselves; on pmxcfs we only send the unlock request, as Proxmox does. There the
lock's mtime is no age: a Proxmox process waiting for the lock has set it to 0 with its unlock
request (seen running the real PVE::Cluster::cfs_lock_file, fixtures/proxmox/pve-9.1.json
"cfs_lock"). Its ctime is: no later than the lock's creation can it be, and each unlock request
renews it, so a lock is stale only when it is older than the lifetime and nobody has asked for
it within that time either.

The local lock (flock on a file under /run/lock) queues the processes of one node before
they poll the cluster lock, so 20 concurrent runs on a node take turns instead of all
sleeping and retrying together.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import hashlib
import os
import tempfile
import time

ACQUIRE_TIMEOUT = 10      # PVE::Cluster cfs_lock default
WORK_TIMEOUT = 60         # cfs_lock: alarm(60) around the locked code
PMXCFS_LOCK_LIFETIME = 120  # pmxcfs drops older locks on an unlock request
POLL_INTERVAL = 0.2


class LockError(Exception):
    pass


def _is_pmxcfs(path, mounts='/proc/mounts'):
    """True when path lies on a FUSE mount (pmxcfs serves /etc/pve through FUSE)."""
    path = os.path.realpath(path)
    best, fstype = '', None
    try:
        with open(mounts) as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mnt = fields[1].replace('\\040', ' ')
                if (path == mnt or path.startswith(mnt.rstrip('/') + '/')) and len(mnt) >= len(best):
                    best, fstype = mnt, fields[2]
    except (IOError, OSError):
        return False
    return fstype is not None and fstype.startswith('fuse')


def _local_lock_path(config_root):
    digest = hashlib.sha1(os.path.realpath(config_root).encode('utf-8')).hexdigest()[:12]
    for directory in ('/run/lock', tempfile.gettempdir()):
        if os.path.isdir(directory) and os.access(directory, os.W_OK):
            return os.path.join(directory, 'pvesan-storage-cfg-%s.lock' % digest)
    raise LockError('no writable directory for the local lock (/run/lock or %s)' % tempfile.gettempdir())


class StorageCfgLock:
    """Context manager: local flock, then the cluster mkdir lock; released in reverse order."""

    def __init__(self, config_root, name='file-storage_cfg', timeout=ACQUIRE_TIMEOUT):
        self.config_root = config_root
        self.lockdir = os.path.join(config_root, 'priv', 'lock')
        self.path = os.path.join(self.lockdir, name)
        self.timeout = timeout
        self.pmxcfs = _is_pmxcfs(config_root)
        self._fd = None
        self._held = False
        self.acquired_at = None

    def __enter__(self):
        deadline = time.monotonic() + self.timeout
        self._lock_local(deadline)
        try:
            self._lock_cluster(deadline)
        except Exception:
            self._unlock_local()
            raise
        self.acquired_at = time.monotonic()
        return self

    def __exit__(self, *exc):
        if self._held:
            try:
                os.rmdir(self.path)
            except OSError:
                pass
            self._held = False
        self._unlock_local()
        return False

    def check_time(self):
        """Fail rather than write when the work took longer than Proxmox allows."""
        if self.acquired_at is not None and time.monotonic() - self.acquired_at > WORK_TIMEOUT:
            raise LockError("held the storage.cfg lock for more than %d s; aborting without writing "
                            "(Proxmox kills locked work after %d s)" % (WORK_TIMEOUT, WORK_TIMEOUT))

    def _lock_local(self, deadline):
        path = _local_lock_path(self.config_root)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except (IOError, OSError) as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                self._unlock_local()
                raise LockError("timeout after %d s waiting for the local lock %s (another run on this "
                                "node is editing storage.cfg)" % (self.timeout, path))
            time.sleep(0.01)

    def _unlock_local(self):
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def _lock_cluster(self, deadline):
        if not os.path.isdir(self.lockdir):
            try:
                os.makedirs(self.lockdir, 0o700)
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise LockError("cannot create %s: %s (is %s the Proxmox cluster file system?)"
                                    % (self.lockdir, e.strerror, self.config_root))
        while True:
            try:
                os.mkdir(self.path)
                self._held = True
                return
            except OSError as e:
                if e.errno != errno.EEXIST:
                    hint = ''
                    if self.pmxcfs and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                        hint = ' (pmxcfs is read-only while the node has no quorum: check pvecm status)'
                    raise LockError("cannot take cluster lock %s: %s%s" % (self.path, e.strerror, hint))
            self._expire_stale()
            if time.monotonic() >= deadline:
                raise LockError("got lock request timeout: %s is held by another process for more than %d s "
                                "(Proxmox's cfs lock timeout); try again, or remove it if no Proxmox task holds it"
                                % (self.path, self.timeout))
            time.sleep(POLL_INTERVAL)

    def _expire_stale(self):
        if self.pmxcfs:
            try:
                os.utime(self.path, (0, 0))  # cfs unlock request: pmxcfs expires it if too old
            except OSError:
                pass
            return
        try:
            age = time.time() - os.stat(self.path).st_ctime
        except OSError:
            return
        if age > PMXCFS_LOCK_LIFETIME:
            try:
                os.rmdir(self.path)
            except OSError:
                pass
