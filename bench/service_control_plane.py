# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Control-plane benchmark of pvesan-service against a bare tgtadm + truncate loop.

Runs a real pvesan-service (HTTPS, SQLite, file pool, private tgtd) and measures, with 0, 1,000
and 5,000 existing volumes:
- create+export latency (POST /api/v1/volumes) and delete latency (DELETE), p50/p99;
- the same work done by hand in the same run, interleaved sample by sample against the same tgtd:
  ``truncate`` + the 6 tgtadm calls the tgt driver makes for a volume of a tenant set up the
  default way (new target, new LUN, LUN params, bind the ACL's two initiator names, bind the
  tenant's CHAP account) and ``tgtadm delete --force`` + unlink; the service sends the same
  requests on tgtd's management socket (``--management tgtadm``: through the tgtadm command, as
  the baseline);
- listing 5,000 volumes (GET /api/v1/volumes) and GET /api/v1/status.
Ratios are service / baseline in the same run (machines are noisy: never compare absolute times
across runs).  Needs root, tgt, openssl and the pvesan-service package.

    sudo .venv/bin/python bench/service_control_plane.py [--levels 0,1000,5000] [--samples 100] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

ADMIN = "bench-admin-" + "k" * 32
IQN = "iqn.2026-11.org.pvesan.bench"
BASE_IQN = "iqn.2026-11.org.pvesan.baseline:v"
# a tenant as the volume_service role makes one: generated CHAP, its two nodes in the ACL
NODES = ["iqn.1993-08.org.debian:01:benchnode1", "iqn.1993-08.org.debian:01:benchnode2"]
BASE_USER = "bench-baseline"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def ok(r):
    if r.status_code >= 400:
        raise SystemExit("%s %s -> %d %s" % (r.request.method, r.request.url, r.status_code, r.text))
    return r


def ms(x):
    return round(x * 1000, 2)


class Bench:
    def __init__(self, top, bstype, sync="FULL", management="socket"):
        self.top = top
        self.sync = sync
        self.bstype = bstype
        self.management = management
        self.port, self.iscsi = free_port(), free_port()
        self.control = 10000 + self.iscsi % 10000
        self.pool = os.path.join(top, "pool")
        self.base = os.path.join(top, "baseline")
        os.makedirs(self.pool)
        os.makedirs(self.base)

    def tgtadm(self, *args):
        subprocess.run(["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self):
        # -t 2: rdwr runs that many I/O threads per LUN (16 by default); 5,000 LUNs x 16 would
        # exceed the kernel's pid_max (32768) on these machines
        self.tgtd = subprocess.Popen(["tgtd", "-f", "-t", "2", "-C", str(self.control), "--iscsi",
                                      "portal=127.0.0.1:%d" % self.iscsi],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for dummy in range(200):
            if subprocess.run(["tgtadm", "-C", str(self.control), "--mode", "system", "--op", "show"],
                              capture_output=True, check=False).returncode == 0:
                break
            time.sleep(0.05)
        cert, key = os.path.join(self.top, "cert.pem"), os.path.join(self.top, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=bench",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        self.cert = cert
        cfg = os.path.join(self.top, "pvesan.yml")
        with open(cfg, "w") as fh:
            json.dump({"listen": "127.0.0.1:%d" % self.port, "tls_cert": cert, "tls_key": key,
                       "database": "sqlite:///" + os.path.join(self.top, "state.db"), "admin_token": ADMIN,
                       "secret_key_file": os.path.join(self.top, "secret.key"),
                       "iqn_prefix": IQN, "portals": ["127.0.0.1:%d" % self.iscsi],
                       "target": {"driver": "tgt", "control_port": self.control, "bstype": self.bstype,
                                  "management": self.management},
                       "pools": [{"name": "pool", "kind": "file", "options": {"path": self.pool}}],
                       "sqlite_synchronous": self.sync, "access_log": False, "log_level": "warning"}, fh)  # JSON is valid YAML
        self.log = open(os.path.join(self.top, "server.log"), "wb")
        self.srv = subprocess.Popen([sys.executable, "-m", "pvesan_service.server", "-c", cfg], stdout=self.log,
                                    stderr=subprocess.STDOUT)
        import httpx
        self.ctx = ssl.create_default_context(cafile=cert)
        for dummy in range(300):
            try:
                if httpx.get("https://127.0.0.1:%d/healthz" % self.port, verify=self.ctx).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        admin = self.client(ADMIN)
        admin.post("/api/v1/tenants", json={"name": "bench", "initiators": NODES}).raise_for_status()
        self.tgtadm("--mode", "account", "--op", "new", "--user", BASE_USER, "--password", "baseline-secret1")
        self.token = admin.post("/api/v1/tokens", json={"name": "b", "tenant": "bench"}).json()["token"]

    def client(self, token=None):
        import httpx
        return httpx.Client(base_url="https://127.0.0.1:%d" % self.port, verify=self.ctx, timeout=120,
                            headers={"Authorization": "Bearer " + (token or self.token)})

    def populate(self, total, workers=4):
        c = self.client()
        have = len(c.get("/api/v1/volumes", params={"prefix": "fill-"}).json())
        todo = list(range(have, total))

        def work(k):
            cl = self.client()
            for i in todo[k::workers]:
                ok(cl.post("/api/v1/volumes", json={"name": "fill-%05d" % i, "size": "1M"}))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    # the same work by hand: what the tgt driver does per create / delete
    # tids count down from 1,000,000: the driver gives new targets max(tid)+1, so no collision
    def base_create(self, i):
        tid, path = 1000000 - i, os.path.join(self.base, "v%d.img" % i)
        with open(path, "wb") as f:
            f.truncate(1 << 20)
        self.tgtadm("--mode", "target", "--op", "new", "--tid", str(tid), "--targetname", BASE_IQN + str(i))
        self.tgtadm("--mode", "logicalunit", "--op", "new", "--tid", str(tid), "--lun", "1", "--backing-store", path,
                    "--bstype", self.bstype)
        self.tgtadm("--mode", "logicalunit", "--op", "update", "--tid", str(tid), "--lun", "1", "--params",
                    "scsi_sn=%016x,vendor_id=PVESAN,product_id=volume,readonly=0" % i)
        for node in NODES:
            self.tgtadm("--mode", "target", "--op", "bind", "--tid", str(tid), "--initiator-name", node)
        self.tgtadm("--mode", "account", "--op", "bind", "--tid", str(tid), "--user", BASE_USER)

    def base_delete(self, i):
        self.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid", str(1000000 - i))
        os.unlink(os.path.join(self.base, "v%d.img" % i))

    def level(self, existing, samples):
        self.populate(existing)
        c = self.client()
        svc_c, svc_d, base_c, base_d = [], [], [], []
        for i in range(samples):  # interleaved: the same noise hits both
            t0 = time.perf_counter()
            ok(c.post("/api/v1/volumes", json={"name": "b-%d-%d" % (existing, i), "size": "1M"}))
            t1 = time.perf_counter()
            self.base_create(i)
            t2 = time.perf_counter()
            svc_c.append(t1 - t0)
            base_c.append(t2 - t1)
        for i in range(samples):
            t0 = time.perf_counter()
            r = c.delete("/api/v1/volumes/b-%d-%d" % (existing, i))
            assert r.status_code == 204, r.text
            t1 = time.perf_counter()
            self.base_delete(i)
            t2 = time.perf_counter()
            svc_d.append(t1 - t0)
            base_d.append(t2 - t1)
        row = {"existing": existing, "samples": samples}
        for name, vals in (("create", svc_c), ("create_baseline", base_c), ("delete", svc_d), ("delete_baseline", base_d)):
            row[name + "_p50_ms"] = ms(pct(vals, 50))
            row[name + "_p99_ms"] = ms(pct(vals, 99))
        row["create_ratio_p50"] = round(pct(svc_c, 50) / pct(base_c, 50), 2)
        row["delete_ratio_p50"] = round(pct(svc_d, 50) / pct(base_d, 50), 2)
        return row

    def reads(self, runs_list=10, runs_status=300):
        c = self.client()
        n = len(c.get("/api/v1/volumes").json())
        lst = []
        for dummy in range(runs_list):
            t0 = time.perf_counter()
            r = c.get("/api/v1/volumes")
            r.json()
            lst.append(time.perf_counter() - t0)
        st = []
        for dummy in range(runs_status):
            t0 = time.perf_counter()
            c.get("/api/v1/status").raise_for_status()
            st.append(time.perf_counter() - t0)
        return {"volumes_listed": n, "list_p50_ms": ms(pct(lst, 50)), "list_max_ms": ms(max(lst)),
                "status_p50_ms": ms(pct(st, 50)), "status_p99_ms": ms(pct(st, 99))}

    def stop(self):
        if getattr(self, "srv", None):
            self.srv.send_signal(signal.SIGTERM)
            try:
                self.srv.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.srv.kill()
        if getattr(self, "tgtd", None):
            self.tgtd.kill()  # tgtd keeps nothing; its targets go with it
            self.tgtd.wait()
            for suffix in ("", ".lock"):
                try:
                    os.unlink("/var/run/tgtd/socket.%d%s" % (self.control, suffix))
                except OSError:
                    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("--levels", default="0,1000,5000")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--bstype", default="rdwr", help="tgt backing-store type for both sides (default rdwr)")
    ap.add_argument("--sqlite-synchronous", default="FULL", choices=["FULL", "NORMAL"],
                    help="service setting (FULL, the default, flushes every acknowledged change)")
    ap.add_argument("--dir", help="work directory (default: a new temp dir, removed after)")
    ap.add_argument("--management", default="socket", choices=["socket", "tgtadm"],
                    help="how the service's tgt driver talks to tgtd (default socket; the baseline always runs tgtadm)")
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("tgtd"):
        sys.exit("needs root and tgt (tgtd, tgtadm)")
    top = args.dir or tempfile.mkdtemp(prefix="pvesan-bench-")
    print("tgt bstype: %s (service and baseline); sqlite_synchronous: %s; service's tgt management: %s" % (
        args.bstype, args.sqlite_synchronous, args.management), flush=True)
    b = Bench(top, args.bstype, args.sqlite_synchronous, args.management)
    results = {"levels": []}
    try:
        b.start()
        for level in [int(x) for x in args.levels.split(",")]:
            row = b.level(level, args.samples)
            results["levels"].append(row)
            print(json.dumps(row), flush=True)
        results["reads"] = b.reads()
        print(json.dumps(results["reads"]), flush=True)
    finally:
        b.stop()
        if not args.dir:
            shutil.rmtree(top, ignore_errors=True)
    print("\n| existing | create p50/p99 ms | baseline p50/p99 ms | ratio p50 | delete p50/p99 ms | baseline p50/p99 ms | ratio p50 |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in results["levels"]:
        print("| %d | %.1f / %.1f | %.1f / %.1f | %.2f | %.1f / %.1f | %.1f / %.1f | %.2f |" % (
            r["existing"], r["create_p50_ms"], r["create_p99_ms"], r["create_baseline_p50_ms"], r["create_baseline_p99_ms"],
            r["create_ratio_p50"], r["delete_p50_ms"], r["delete_p99_ms"], r["delete_baseline_p50_ms"],
            r["delete_baseline_p99_ms"], r["delete_ratio_p50"]))
    rd = results["reads"]
    print("\nlist of %d volumes: p50 %.1f ms (max %.1f ms); GET /status: p50 %.2f ms, p99 %.2f ms" % (
        rd["volumes_listed"], rd["list_p50_ms"], rd["list_max_ms"], rd["status_p50_ms"], rd["status_p99_ms"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
