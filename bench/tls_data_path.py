# Copyright (c) pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""4k write IOPS at queue depth 16 through the TLS tunnel, as a ratio to plain iSCSI.

Everything runs on this machine, on loopback, side by side in one run: a private tgtd (its own
control port and portal, so it never touches another tgtd) exporting a sparse file, and stunnel
server/client pairs whose configuration is rendered from the transport_encryption role's own
template (roles/transport_encryption/templates/stunnel.conf.j2), so the figures are those of the
settings the role deploys. The client is QEMU's libiscsi (`qemu-img bench`), the same code path
Proxmox's QEMU uses for iscsi:// disks.

Variants (each its own stunnel pair, all measured in rotation, `--rounds` times):
  plain           initiator -> tgtd
  tls             the role's defaults (TLS 1.3, AES-128-GCM first, TCP_NODELAY on both sockets)
  tls-nagle       the same without TCP_NODELAY (what stunnel does by default)
  tls-chacha20    the role's defaults but ChaCha20-Poly1305 only

Output: median IOPS per variant and each median as a ratio to plain. Needs root, tgt, stunnel4,
qemu-utils + qemu-block-extra, openssl; python3-jinja2. Usage:
  sudo .venv/bin/python bench/tls_data_path.py [--rounds 5] [--count 30000] [--json]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import jinja2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE_DIR = os.path.join(ROOT, "roles", "transport_encryption", "templates")
IQN = "iqn.2026-11.io.pvesan:bench-tls"
ROLE_DEFAULTS = dict(
    transport_encryption_tls_log_level=3,
    transport_encryption_tls_mutual=True,
    transport_encryption_tls_min_version="TLSv1.3",
    transport_encryption_tls_ciphersuites="TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
    transport_encryption_tls12_ciphers="",
    transport_encryption_tls_nodelay=True,
    ansible_managed="rendered by bench/tls_data_path.py",
)
VARIANTS = {
    "tls": {},
    "tls-nagle": {"transport_encryption_tls_nodelay": False},
    "tls-chacha20": {"transport_encryption_tls_ciphersuites": "TLS_CHACHA20_POLY1305_SHA256"},
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("nothing listens on 127.0.0.1:%d" % port)


def make_pki(d):
    """A CA and two EC P-256 certificates (storage host with IP SAN 127.0.0.1, node)."""
    def req(name, extra):
        key, crt, csr = (os.path.join(d, name + s) for s in (".key", ".crt", ".csr"))
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=" + name])
        ext = os.path.join(d, name + ".ext")
        with open(ext, "w") as f:
            f.write(extra)
        run(["openssl", "x509", "-req", "-in", csr, "-CA", os.path.join(d, "ca.crt"), "-CAkey",
             os.path.join(d, "ca.key"), "-CAcreateserial", "-days", "2", "-out", crt, "-extfile", ext])
    run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", os.path.join(d, "ca.key"), "-out", os.path.join(d, "ca.crt"), "-days", "2",
         "-subj", "/CN=bench CA", "-addext", "basicConstraints=critical,CA:TRUE"])
    req("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    req("client", "subjectAltName=DNS:client\nextendedKeyUsage=serverAuth,clientAuth\n")


def render(env, side, config_dir, portal, local_port, settings):
    """The role's stunnel.conf for one side, with certificates laid out as the role does."""
    tls = os.path.join(config_dir, "tls")
    os.makedirs(tls)
    pki = os.path.dirname(config_dir)
    shutil.copy(os.path.join(pki, "ca.crt"), os.path.join(tls, "ca.crt"))
    shutil.copy(os.path.join(pki, side + ".crt"), os.path.join(tls, "host.crt"))
    shutil.copy(os.path.join(pki, side + ".key"), os.path.join(tls, "host.key"))
    values = dict(ROLE_DEFAULTS, **settings)
    values.update(
        transport_encryption_side=side,
        transport_encryption_config_dir=config_dir,
        transport_encryption_portals=[portal],
        transport_encryption_local_portals=[portal],
        transport_encryption_endpoints={"%s:%s" % (portal["address"], portal["port"]): "127.0.0.1:%d" % local_port},
    )
    conf = os.path.join(config_dir, "stunnel.conf")
    with open(conf, "w") as f:
        f.write(env.get_template("stunnel.conf.j2").render(**values))
    return conf


def bench(port, count, depth):
    out = run(["qemu-img", "bench", "-w", "-c", str(count), "-d", str(depth), "-s", "4k", "-f", "raw",
               "iscsi://127.0.0.1:%d/%s/1" % (port, IQN)]).stdout
    seconds = float(re.search(r"Run completed in ([0-9.]+) seconds", out).group(1))
    return count / seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=30000, help="4k writes per measurement")
    ap.add_argument("--depth", type=int, default=16, help="queue depth (16 is the reference figure)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for tool in ("tgtd", "tgtadm", "stunnel4", "qemu-img", "openssl"):
        if not shutil.which(tool):
            sys.exit("missing %s (apt install tgt stunnel4 qemu-utils qemu-block-extra openssl)" % tool)

    work = tempfile.mkdtemp(prefix="pvesan-bench-tls-")
    procs = []
    try:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), keep_trailing_newline=True,
                                 trim_blocks=True)  # as ansible.builtin.template renders
        make_pki(work)
        backing = os.path.join(work, "lun.img")
        with open(backing, "wb") as f:
            f.truncate(512 << 20)

        iscsi_port, control = free_port(), 20000 + os.getpid() % 10000
        procs.append(subprocess.Popen(["tgtd", "-f", "-C", str(control), "--iscsi", "portal=127.0.0.1:%d" % iscsi_port],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(iscsi_port)
        adm = ["tgtadm", "-C", str(control), "--lld", "iscsi"]
        run(adm + ["--mode", "target", "--op", "new", "--tid", "1", "--targetname", IQN])
        run(adm + ["--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1", "--bstype", "rdwr",
                   "--backing-store", backing])
        run(adm + ["--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address", "ALL"])

        ports = {"plain": iscsi_port}
        for name, settings in VARIANTS.items():
            portal = {"address": "127.0.0.1", "port": iscsi_port, "tls_port": free_port()}
            local = free_port()
            for side in ("server", "client"):
                conf = render(env, side, os.path.join(work, name + "-" + side), portal, local, settings)
                procs.append(subprocess.Popen(["stunnel4", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(portal["tls_port"])
            wait_port(local)
            ports[name] = local

        names = list(ports)
        bench(iscsi_port, 2000, args.depth)  # warm up tgtd and the page cache
        results = {n: [] for n in names}
        for r in range(args.rounds):
            # Rotate the order so no variant always runs first or last.
            for name in names[r % len(names):] + names[:r % len(names)]:
                results[name].append(bench(ports[name], args.count, args.depth))

        base = statistics.median(results["plain"])
        summary = {n: {"median_iops": round(statistics.median(v)), "ratio_to_plain": round(statistics.median(v) / base, 3),
                       "runs": [round(x) for x in v]} for n, v in results.items()}
        if args.json:
            print(json.dumps({"rounds": args.rounds, "count": args.count, "block_size": 4096, "queue_depth": args.depth,
                              "variants": summary}, indent=2))
        else:
            print("4k writes, queue depth %d, %d x %d writes per variant, tgtd on loopback (medians)"
                  % (args.depth, args.rounds, args.count))
            for n in names:
                print("  %-13s %8d IOPS   %.2f x plain" % (n, summary[n]["median_iops"], summary[n]["ratio_to_plain"]))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
