# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: what a thin export saves a sparse-aware copy, and what a discard costs.

One private tgtd, one loop-mounted XFS (reflink=1, as a file pool), one 10 GiB volume made by
the service's file backend holding 1 GiB of data (16 runs of 64 MiB spread over the volume),
exported twice by the service's tgt driver, as a thin LUN and as a fully provisioned one, both
on the same file.  In the same run:

1. ``qemu-img convert`` of the whole LUN to a sparse raw file (what a disk move or backup of
   the volume does), thin export vs fully provisioned export: the thin LUN answers GET LBA
   STATUS, so QEMU skips the holes; the other one makes it read all 10 GiB.  Printed: the
   seconds of each and the ratio (fully provisioned / thin).
2. Making 1 GiB of written data zero again through the thin LUN: with a discard (UNMAP, what
   fstrim in a guest sends; the pool gets the space back) vs by writing zeros (what a guest
   without discard does; the space stays allocated).  Printed: GiB/s of each and the ratio.
3. ``pvesan volume reclaim``'s backend work on the volume after 1 GiB of zeros was written as
   data, against reading that 1 GiB once (cold cache both times): the cost of finding and
   freeing the zero ranges.

Rounds alternate the two sides of each comparison; medians.  Run as root:
    .venv/bin/python bench/thin_copy.py [--rounds 3]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "service", "src"))

from pvesan_service.backends import make_backend  # noqa: E402  pylint: disable=wrong-import-position
from pvesan_service.targets import Export, make_target_driver  # noqa: E402  pylint: disable=wrong-import-position
from private_tgtd import run, tgtd_on_xfs  # noqa: E402  pylint: disable=wrong-import-position

GiB, MiB = 1024 ** 3, 1024 ** 2
SIZE = 10 * GiB
RUNS = [(i * SIZE // 16, 64 * MiB) for i in range(16)]  # 16 x 64 MiB = 1 GiB of data


def timed(*argv) -> float:
    start = time.perf_counter()
    run(*argv)
    return time.perf_counter() - start


def write_data(path, pattern=b"\x5a"):
    with open(path, "r+b") as f:
        for offset, length in RUNS:
            f.seek(offset)
            for _mib in range(length // MiB):
                f.write(pattern * MiB)
        os.fsync(f.fileno())


def read_data(path) -> float:
    """Seconds to read the data runs once (what reclaim has to read at least)."""
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, length in RUNS:
            for pos in range(offset, offset + length, MiB):
                os.pread(fd, MiB, pos)
    finally:
        os.close(fd)
    return time.perf_counter() - start


def drop_caches():
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (loop mount and tgtd)")
    with tgtd_on_xfs("24G", prefix="pvesan-bench-thin-") as (mnt, control, port):
        pool = make_backend("file", path=os.path.join(mnt, "pool"))
        os.mkdir(pool.root)
        pool.check()
        drv = make_target_driver("tgt", control_port=control, iqn_prefix="iqn.2026-12.org.pvesan.bench:",
                                 portals=["127.0.0.1:%d" % port])
        vid = "v-00000000000000aa"
        path = pool.create(vid, SIZE, thin=True)
        write_data(path)
        urls = {}
        for kind, thin in (("thin", True), ("thick", False)):
            iqn = "iqn.2026-12.org.pvesan.bench:%s-%s" % (vid, kind)
            drv.export(Export(iqn=iqn, lun=1, backing_path=path, serial=vid[2:] if thin else "00000000000000ab",
                              initiators=["ALL"], thin=thin))
            urls[kind] = "iscsi://127.0.0.1:%d/%s/1" % (port, iqn)

        # 1. sparse-aware copy
        copy = os.path.join(mnt, "copy.raw")
        times = {"thin": [], "thick": []}
        for r in range(args.rounds):
            for kind in (("thin", "thick") if r % 2 == 0 else ("thick", "thin")):
                times[kind].append(timed("qemu-img", "convert", "-f", "raw", "-O", "raw", urls[kind], copy))
                assert os.stat(copy).st_blocks * 512 <= 1.1 * GiB  # sparse output both times
                os.unlink(copy)
        thin_s, thick_s = statistics.median(times["thin"]), statistics.median(times["thick"])
        print("qemu-img convert of a 10 GiB volume holding 1 GiB: thin export %.1f s, fully provisioned %.1f s: "
              "ratio %.1f" % (thin_s, thick_s, thick_s / thin_s))

        # 2. zeroing 1 GiB through the LUN: discard vs zero writes (qemu-io without zero detection)
        commands = {"discard": [x for o, n in RUNS for x in ("-c", "discard %d %d" % (o, n))],
                    "zeros": [x for o, n in RUNS for x in ("-c", "write -P 0 %d %d" % (o, n))]}
        rates = {"discard": [], "zeros": []}
        for r in range(args.rounds):
            for kind in (("discard", "zeros") if r % 2 == 0 else ("zeros", "discard")):
                write_data(path)
                before = os.stat(path).st_blocks * 512
                seconds = timed("qemu-io", "-f", "raw", *commands[kind], urls["thin"])
                rates[kind].append(1.0 / seconds)
                after = os.stat(path).st_blocks * 512
                if kind == "discard":
                    assert after <= before - GiB + 64 * MiB, (before, after)
        d, z = statistics.median(rates["discard"]), statistics.median(rates["zeros"])
        print("making 1 GiB zero through the thin LUN: discard %.2f GiB/s (space freed), zero writes %.2f GiB/s "
              "(space kept): ratio %.1f" % (d, z, d / z))

        # 3. reclaim of zeros written as data vs one read of the data
        reclaim_s, read_s = [], []
        for r in range(args.rounds):
            write_data(path, b"\0")  # 1 GiB of zeros written as data
            os.sync()
            drop_caches()
            read_s.append(read_data(path))
            drop_caches()
            start = time.perf_counter()
            freed = pool.reclaim(vid)
            reclaim_s.append(time.perf_counter() - start)
            assert freed >= GiB - 64 * MiB, freed
        rc, rd = statistics.median(reclaim_s), statistics.median(read_s)
        print("reclaim of 1 GiB of zeros in a 10 GiB volume: %.2f s (%.2f GiB/s), reading that 1 GiB once %.2f s: "
              "ratio %.2f" % (rc, 1 / rc, rd, rc / rd))


if __name__ == "__main__":
    main()
