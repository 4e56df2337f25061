# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: 4k write IOPS at queue depth 16 through an export made by the service's storage
layer (file backend volume + tgt driver with its defaults, as the service makes every volume)
against hand-made tgt exports of the same kind of file (truncate + plain tgtadm commands, with
tgt's default backing store ``rdwr``, which the driver uses too, twice: the second one is an A/A
control showing the run's noise; and with ``aio`` for comparison), in the same run, on the same
loop-mounted XFS (reflink=1, as a file pool), through one private tgtd.

Client: ``qemu-img bench -w -c N -d 16 -s 4k -S <stride> -f raw iscsi://...`` (QEMU's libiscsi,
the path Proxmox's QEMU takes for iscsi:// disks).  qemu-img bench has no random mode, so the
4k writes walk the 1 GiB LUN at a stride of 2053 blocks (a prime), which scatters them over
the whole LUN.  Rounds alternate service/hand-made to spread the machine's noise over both;
the ratio of the medians is printed (target >= 0.95: the service must not slow the data path).

Run as root:  .venv/bin/python bench/service_data_path.py [--rounds 12] [--count 25000] [--tgtd-threads N]
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "service", "src"))

from pvesan_service.backends import make_backend  # noqa: E402  pylint: disable=wrong-import-position
from pvesan_service.targets import Export, make_target_driver  # noqa: E402  pylint: disable=wrong-import-position
from private_tgtd import run, tgtd_on_xfs, write_iops  # noqa: E402  pylint: disable=wrong-import-position

SIZE = 1024 ** 3
STRIDE = 4096 * 2053


def bench(url, count):
    return write_iops(url, count, STRIDE)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--count", type=int, default=25000, help="4k writes per measurement")
    parser.add_argument("--tgtd-threads", type=int, default=0, help="tgtd -t (I/O threads per rdwr LUN; 0: tgtd's default, 16)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (loop mount and tgtd)")

    with tgtd_on_xfs("4G", threads=args.tgtd_threads) as (mnt, control, port):
        # the service's way: file pool volume + tgt driver export (default driver options)
        pool = make_backend("file", path=os.path.join(mnt, "pool"))
        os.mkdir(pool.root)
        pool.check()
        driver = make_target_driver("tgt", control_port=control)
        svc_iqn = "iqn.2026-11.io.pvesan:bench.v-0000000000000001"
        path = pool.create("v-0000000000000001", SIZE)
        driver.export(Export(iqn=svc_iqn, lun=1, backing_path=path, serial="v0000000000000001", initiators=["ALL"]))

        # by hand: the same kind of file, the same tgtd, plain tgtadm commands; once with tgt's
        # default backing store (rdwr) and once with the driver's (aio)
        urls = {"service": "iscsi://127.0.0.1:%d/%s/1" % (port, svc_iqn)}
        tgtadm = ["tgtadm", "-C", str(control), "--lld", "iscsi"]
        # "hand-rdwr-again" is a second, identical hand-made export: the A/A control that shows
        # how far two equal exports drift apart on this machine in this run (noise).
        for tid, name, bstype in ((100, "hand-rdwr", "rdwr"), (101, "hand-rdwr-again", "rdwr"), (102, "hand-aio", "aio")):
            hand_iqn = "iqn.2026-11.io.example:bench." + name
            hand_file = os.path.join(mnt, name + ".img")
            run("truncate", "-s", str(SIZE), hand_file)
            run(*tgtadm, "--op", "new", "--mode", "target", "--tid", str(tid), "-T", hand_iqn)
            run(*tgtadm, "--op", "new", "--mode", "logicalunit", "--tid", str(tid), "--lun", "1", "-b", hand_file, "--bstype", bstype)
            run(*tgtadm, "--op", "bind", "--mode", "target", "--tid", str(tid), "-I", "ALL")
            urls[name] = "iscsi://127.0.0.1:%d/%s/1" % (port, hand_iqn)

        for url in urls.values():  # warm-up: allocate the blocks the rounds will overwrite
            bench(url, args.count)
        kinds = list(urls)
        results = dict((kind, []) for kind in kinds)
        for i in range(args.rounds):
            for kind in kinds[i % len(kinds):] + kinds[:i % len(kinds)]:  # rotate who goes first
                results[kind].append(bench(urls[kind], args.count))
            print("round %d: " % (i + 1) + ", ".join("%s %.0f" % (k, results[k][-1]) for k in kinds) + " IOPS", flush=True)
        med = dict((k, statistics.median(v)) for k, v in results.items())
        print("tgtd I/O threads per rdwr LUN: %s" % (args.tgtd_threads or "16 (default)"))
        print("command: qemu-img bench -w -c %d -d 16 -s 4k -S %d -f raw iscsi://127.0.0.1:<port>/<iqn>/1" % (args.count, STRIDE))
        print("median 4k write IOPS (QD16): " + ", ".join("%s %.0f" % (k, med[k]) for k in kinds))
        print("ratio service/hand-made rdwr (tgt default): %.3f (target >= 0.95)" % (med["service"] / med["hand-rdwr"]))
        print("A/A control hand-made/identical hand-made: %.3f (noise of this run)" % (med["hand-rdwr-again"] / med["hand-rdwr"]))
        print("for the default's sake, service (rdwr)/hand-made aio: %.3f" % (med["service"] / med["hand-aio"]))


if __name__ == "__main__":
    main()
