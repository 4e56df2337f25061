# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: what pve_storage does to storage.cfg (parse + validate + modify one storage +
render + atomic write) for files of 100, 1,000 and 10,000 storages, against a plain
parse-only baseline (split lines, match the header, split key/value; no checks) measured in
the same run. Prints the times, the ratio to the baseline and the time per storage (linear
growth = constant per-storage time).

Run:  PYTHONPATH=.cache/collections .venv/bin/python bench/storage_cfg.py [--repeat N]
Target (issue 3): the module's work under 100 ms for 1,000 storages.
"""

from __future__ import print_function

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '.cache', 'collections'))

from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_cfg import (  # noqa: E402
    StorageCfgFile, StorageConfig, desired_props, plan_present,
)

SIZES = (100, 1000, 10000)


def make_cfg(n):
    """A realistic mix of storage types, written in Proxmox's canonical form."""
    out = ['dir: local\n\tpath /var/lib/vz\n\tcontent backup,iso,vztmpl\n\n']
    for i in range(n - 1):
        kind = i % 5
        if kind == 0:
            out.append('lvmthin: thin%d\n\tthinpool data\n\tvgname vg%d\n\tcontent images,rootdir\n\tnodes pve1,pve2\n\n' % (i, i))
        elif kind == 1:
            out.append('nfs: nfs%d\n\texport /export/%d\n\tpath /mnt/pve/nfs%d\n\tserver 10.0.%d.%d\n\tcontent iso,vztmpl\n'
                       '\toptions vers=4.2\n\tprune-backups keep-last=3\n\n' % (i, i, i, i // 250 % 250, i % 250 + 1))
        elif kind == 2:
            out.append('zfspool: zfs%d\n\tpool tank/vm%d\n\tcontent images,rootdir\n\tsparse 1\n\n' % (i, i))
        elif kind == 3:
            out.append('pvesan: san%d\n\tapi_url https://10.89.1.10:8443/api\n\tcontent images\n\tmultipath 1\n\tshared 1\n'
                       '\tssl_verify_peer 1\n\ttransport_encryption tls\n\n' % i)
        else:
            out.append('dir: dir%d\n\tpath /srv/dir%d\n\tcontent backup\n\tmax-protected-backups 3\n\n' % (i, i))
    return ''.join(out)


HEADER = re.compile(r'^(\S+):\s*(\S+)\s*$')


def baseline_parse(text):
    """Plain parse-only: the least any reader of the format must do."""
    sections, cur = {}, None
    for line in text.split('\n'):
        if not line:
            cur = None
        elif line[0] in ' \t':
            if cur is not None:
                key, value = (line.strip().split(None, 1) + [''])[:2]
                cur[key] = value
        else:
            m = HEADER.match(line)
            if m:
                cur = sections[m.group(2)] = {'type': m.group(1)}
    return sections


def module_work(text, n):
    """parse + validate + change one storage + render (what the module does in memory)."""
    cfg = StorageConfig.parse(text)
    sid = 'san%d' % (3 if n > 4 else 0)
    props = desired_props('pvesan', sid, {'api_url': 'https://10.89.1.10:8443/api', 'multipath': False})
    cfg.set(plan_present(cfg, sid, 'pvesan', props)[1])
    return cfg


def timed(fn, repeat):
    samples = []
    for dummy in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--repeat', type=int, default=7)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix='bench-storage-cfg-')
    store = StorageCfgFile(tmp)
    rows = []
    try:
        for n in SIZES:
            text = make_cfg(n)
            repeat = max(3, args.repeat if n <= 1000 else args.repeat // 2)
            base = timed(lambda: baseline_parse(text), repeat)
            work = timed(lambda: module_work(text, n), repeat)
            full = timed(lambda: store.write(module_work(text, n)), repeat)
            check = StorageConfig.parse(open(store.path).read())
            assert len(check.order()) == n and check.get('san3').props['multipath'] is False
            rows.append((n, len(text), base, work, full))
    finally:
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)

    print('storage.cfg benchmark (median of runs; ratios against the plain parse-only baseline of the same run)')
    print('%8s %9s %12s %14s %10s %16s %10s %14s' % (
        'storages', 'bytes', 'baseline ms', 'parse+mod+render', 'x base', '+atomic write ms', 'x base', 'us/storage'))
    for n, size, base, work, full in rows:
        print('%8d %9d %12.2f %14.2f ms %9.1fx %16.2f %9.1fx %14.1f' % (
            n, size, base * 1e3, work * 1e3, work / base, full * 1e3, full / base, full / n * 1e6))
    per = dict((row[0], row[4] / row[0]) for row in rows)
    print('linearity: per-storage time 10,000 vs 1,000 = %.2f (1.0 = linear), 1,000 vs 100 = %.2f'
          % (per[10000] / per[1000], per[1000] / per[100]))
    t1000 = dict((row[0], row[4]) for row in rows)[1000]
    print('target: module work for 1,000 storages %.1f ms (< 100 ms: %s)' % (t1000 * 1e3, 'met' if t1000 < 0.1 else 'NOT met'))


if __name__ == '__main__':
    main()
