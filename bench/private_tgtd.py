# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The setting of the data-path benchmarks: a private tgtd (its own control port and loopback
portal, so it never touches another tgtd) and a loop-mounted XFS made with reflink=1 (as a file
pool), both removed at the end."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time


def run(*argv, check=True):
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_control_port(start):
    """A tgtd control port (tgtadm -C, at most 32767) that no tgtd on this machine uses."""
    for control in range(start, 32768):
        if not os.path.exists("/var/run/tgtd/socket.%d" % control):
            return control
    raise RuntimeError("no free tgtd control port from %d" % start)


def write_iops(url, count, stride, depth=16):
    """4k writes per second of ``qemu-img bench -w`` (QEMU's libiscsi for iscsi:// URLs)."""
    out = run("qemu-img", "bench", "-w", "-c", str(count), "-d", str(depth), "-s", "4k", "-S", str(stride), "-f", "raw",
              url).stdout
    return count / float(re.search(r"Run completed in ([0-9.]+) seconds", out).group(1))


@contextlib.contextmanager
def tgtd_on_xfs(fs_size, threads=0, prefix="pvesan-bench-"):
    """Yield (mount point, tgtd control port, iSCSI port on 127.0.0.1); ``threads``: tgtd -t
    (I/O threads per rdwr LUN; 0: tgtd's default, 16)."""
    top = tempfile.mkdtemp(prefix=prefix)
    image, mnt = os.path.join(top, "fs.img"), os.path.join(top, "mnt")
    os.mkdir(mnt)
    port = free_port()
    control = free_control_port(10000 + port % 20000)
    tgtd = None
    try:
        run("truncate", "-s", fs_size, image)
        run("mkfs.xfs", "-q", "-m", "reflink=1", image)
        run("mount", "-o", "loop", image, mnt)
        tgtd = subprocess.Popen(["tgtd", "-f", "-C", str(control), *(["-t", str(threads)] if threads else []),
                                 "--iscsi", "portal=127.0.0.1:%d" % port],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while run("tgtadm", "-C", str(control), "--mode", "system", "--op", "show", check=False).returncode:
            time.sleep(0.05)
        yield mnt, control, port
    finally:
        if tgtd is not None:  # tgtd leaves only once its targets are gone
            out = run("tgtadm", "-C", str(control), "--mode", "target", "--op", "show", check=False).stdout
            for tid in re.findall(r"^Target (\d+):", out, re.M):
                run("tgtadm", "-C", str(control), "--mode", "target", "--op", "delete", "--force", "--tid", tid, check=False)
            run("tgtadm", "-C", str(control), "--mode", "system", "--op", "delete", check=False)
            try:
                tgtd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                tgtd.kill()
                tgtd.wait()
            for suffix in ("", ".lock"):
                if os.path.exists("/var/run/tgtd/socket.%d%s" % (control, suffix)):
                    os.unlink("/var/run/tgtd/socket.%d%s" % (control, suffix))
        run("umount", mnt, check=False)
        shutil.rmtree(top, ignore_errors=True)
