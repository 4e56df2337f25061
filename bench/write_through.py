# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: what write-through exports cost.  4k write IOPS at queue depth 16 through exports the
service's storage layer makes (file pool volume on a loop-mounted XFS with reflink=1 + tgt driver),
write-through (``write_through: true``: tgt's backing-store flag ``sync``, O_SYNC; and with
``bsoflags: direct`` as well, ``sync:direct``) against the default (``rdwr``, buffered, written back
later), in the same run, through one private tgtd; a second default export is the A/A control
that shows the run's noise.

Two kinds of writes, because O_SYNC costs differ: ``overwrite`` (the blocks were written before,
as in a guest's filesystem that is in use) and ``allocate`` (every write lands in a hole of a fresh
thin volume, so XFS allocates a block and, under O_SYNC, commits that allocation to its journal
before the write completes).  For ``allocate`` every round gets fresh volumes (unexported, deleted,
created and exported again).

Client: ``qemu-img bench -w -c N -d 16 -s 4k -S <stride> -f raw iscsi://...`` (QEMU's libiscsi, as
Proxmox's QEMU); the stride of 2053 blocks (a prime) scatters the writes over the 1 GiB LUN, each
block at most once per measurement.  Rounds rotate who goes first; medians and the ratios
write-through/default are printed.

Run as root:  .venv/bin/python bench/write_through.py [--rounds 5] [--count 8000] [--tgtd-threads 2]
"""
import argparse
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "service", "src"))

from pvesan_service.backends import make_backend  # noqa: E402  pylint: disable=wrong-import-position
from pvesan_service.shared._tgt import parse_show  # noqa: E402  pylint: disable=wrong-import-position
from pvesan_service.targets import Export, make_target_driver  # noqa: E402  pylint: disable=wrong-import-position
from private_tgtd import run, tgtd_on_xfs, write_iops  # noqa: E402  pylint: disable=wrong-import-position

SIZE = 1024 ** 3
STRIDE = 4096 * 2053
PREFIX = "iqn.2026-11.io.pvesan:bench."
# kind -> driver options; "default-again" is the A/A control
KINDS = {"default": {}, "default-again": {}, "write-through": {"write_through": True},
         "write-through+direct": {"write_through": True, "bsoflags": "direct"}}


def bench(url, count):
    return write_iops(url, count, STRIDE)


class Exports:
    """One volume per kind in the file pool, exported by a driver with that kind's options."""

    def __init__(self, pool, control, port):
        self.pool, self.port = pool, port
        self.drivers = dict((kind, make_target_driver("tgt", control_port=control, iqn_prefix=PREFIX, **opts))
                            for kind, opts in KINDS.items())

    @staticmethod
    def volume(kind):
        return "v-" + re.sub(r"[^a-z]", "", kind)

    def url(self, kind):
        return "iscsi://127.0.0.1:%d/%s%s/1" % (self.port, PREFIX, self.volume(kind))

    def create(self, kind):
        name = self.volume(kind)
        path = self.pool.create(name, SIZE)
        for driver in self.drivers.values():
            driver.list_exports()  # every driver re-reads tgtd (the others took tids meanwhile)
        self.drivers[kind].export(Export(iqn=PREFIX + name, lun=1, backing_path=path, serial=name, initiators=["ALL"]))

    def drop(self, kind):
        self.drivers[kind].unexport(PREFIX + self.volume(kind))
        self.pool.delete(self.volume(kind))


def measure(exports, kinds, rounds, count, fresh):
    results = dict((kind, []) for kind in kinds)
    for i in range(rounds):
        if fresh:
            for kind in kinds:
                exports.drop(kind)
                exports.create(kind)
        for kind in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:  # rotate who goes first
            results[kind].append(bench(exports.url(kind), count))
        print("  round %d: " % (i + 1) + ", ".join("%s %.0f" % (k, results[k][-1]) for k in kinds) + " IOPS", flush=True)
    return dict((k, statistics.median(v)) for k, v in results.items())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=8000, help="4k writes per measurement (at most 262144)")
    parser.add_argument("--tgtd-threads", type=int, default=2,
                        help="tgtd -t: I/O threads per rdwr LUN (default 2, the volume_service role's; 0: tgtd's own 16)")
    parser.add_argument("--mode", choices=("overwrite", "allocate", "both"), default="both")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (loop mount and tgtd)")
    if not 0 < args.count <= SIZE // 4096:
        sys.exit("--count must be 1..%d (each block of the LUN at most once)" % (SIZE // 4096))

    with tgtd_on_xfs("8G", threads=args.tgtd_threads, prefix="pvesan-bench-wt-") as (mnt, control, port):
        pool = make_backend("file", path=os.path.join(mnt, "pool"))
        os.mkdir(pool.root)
        pool.check()
        exports = Exports(pool, control, port)
        kinds = list(KINDS)
        for kind in kinds:
            exports.create(kind)
        shown = parse_show(run("tgtadm", "-C", str(control), "--lld", "iscsi", "--mode", "target", "--op", "show").stdout)
        flags = dict((t["iqn"], t["luns"][0]["bsoflags"] or "") for t in shown)
        print("tgtd's own report, backing store flags: " + ", ".join(
            "%s %r" % (k, flags[PREFIX + exports.volume(k)]) for k in kinds), flush=True)

        medians = {}
        modes = ("overwrite", "allocate") if args.mode == "both" else (args.mode,)
        for mode in modes:
            print("%s:" % mode, flush=True)
            if mode == "overwrite":
                for kind in kinds:  # warm-up: allocate the blocks the rounds will overwrite
                    bench(exports.url(kind), args.count)
            medians[mode] = measure(exports, kinds, args.rounds, args.count, fresh=mode == "allocate")

        print("tgtd I/O threads per rdwr LUN: %s" % (args.tgtd_threads or "16 (tgtd's default)"))
        print("command: qemu-img bench -w -c %d -d 16 -s 4k -S %d -f raw iscsi://127.0.0.1:<port>/<iqn>/1" % (args.count, STRIDE))
        for mode, med in medians.items():
            print("%s, median 4k write IOPS (QD16): " % mode + ", ".join("%s %.0f" % (k, med[k]) for k in kinds))
            print("  ratio write-through/default: %.3f; write-through+direct/default: %.3f; A/A control default-again/default: %.3f"
                  % (med["write-through"] / med["default"], med["write-through+direct"] / med["default"],
                     med["default-again"] / med["default"]))


if __name__ == "__main__":
    main()
