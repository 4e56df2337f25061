"""Shared fixtures of the service tests.

Real things wherever they run here, each set up and torn down by its fixture:
- ``xfs_dir``: a loop-mounted XFS made with reflink=1 (session), pools live in sub-directories;
- ``tgtd_daemon``: a private tgtd on 127.0.0.1:<free port> with its own control port (``-C``);
- ``postgres_url``: a private PostgreSQL server (initdb + pg_ctl as user postgres, unix socket);
- ``server``: a real ``pvesan-service`` process over HTTPS (self-signed certificate) on all of them.
``FakeTarget`` is an in-memory stand-in for the iSCSI target, used only by the API unit tests.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from pvesan_service.api import create_app
from pvesan_service.db import Store
from pvesan_service.domain import Service
from pvesan_service.targets.base import Export, TargetDriver

# the one reader of kernel-VM recordings (tests/unit/recorded.py), shared with the collection's tests
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "unit"))

MiB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
IQN_PREFIX = "iqn.2026-11.org.pvesan.test"
ADMIN_TOKEN = "admin-" + "x" * 40
IS_ROOT = os.geteuid() == 0
E2E_TOOLS = ("tgtd", "tgtadm", "qemu-io", "iscsi-readcapacity16", "mkfs.xfs", "openssl")
needs_e2e = pytest.mark.skipif(not IS_ROOT or not all(shutil.which(t) for t in E2E_TOOLS),
                               reason="needs root, tgt, qemu-utils, libiscsi-bin, xfsprogs, openssl")
needs_xfs = pytest.mark.skipif(not IS_ROOT or not shutil.which("mkfs.xfs"), reason="needs root and mkfs.xfs")


# The initiator name the tests' clients present; tenants list it in their ACL, as the
# volume_service role lists the Proxmox nodes' names.
TEST_INITIATOR = "iqn.2026-11.org.pvesan.test:client"


def image_opts(vol, chap=True, initiator=TEST_INITIATOR) -> str:
    """QEMU ``--image-opts`` for LUN 1 of a volume of the API, logging in as ``initiator`` with
    the volume's own CHAP credentials (``chap=False``: none; a (user, password) pair: those)."""
    export = vol["export"]
    opts = "driver=iscsi,transport=tcp,portal=%s,target=%s,lun=%d,initiator-name=%s" % (
        export["portals"][0], export["iqn"], export["lun"], initiator)
    if chap is True:
        chap = (export["chap"]["user"], export["chap"]["password"]) if export["chap"] else None
    if chap:
        opts += ",user=%s,password=%s" % chap
    return opts


def qemu_io(target, *commands, timeout=120):
    """qemu-io on an ``iscsi://`` URL or ``--image-opts`` (see image_opts)."""
    argv = ["qemu-io"] + (["-f", "raw"] if target.startswith("iscsi://") else ["--image-opts"])
    for c in commands:
        argv += ["-c", c]
    return subprocess.run(argv + [target], capture_output=True, text=True, timeout=timeout, check=False)


def libiscsi_url(vol, initiator=TEST_INITIATOR) -> list:
    """Arguments for the libiscsi-bin tools (iscsi-inq, iscsi-readcapacity16, ...) on a volume."""
    export = vol["export"]
    chap = export["chap"]
    auth = "%s%%%s@" % (chap["user"], chap["password"]) if chap else ""
    return ["-i", initiator, "iscsi://%s%s/%s/%d" % (auth, export["portals"][0], export["iqn"], export["lun"])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=30.0, step=0.05, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting for %s" % what)


# ------------------------------------------------------------------------------- fakes (unit tests)
class FakeTarget(TargetDriver):
    """In-memory target for API unit tests (the real tgt driver runs in the e2e tests)."""

    kind = "fake"

    def __init__(self):
        self.exports: dict[str, Export] = {}
        self.up = True
        self.generation = 1
        self.calls: list[tuple] = []

    def export(self, export):
        self.calls.append(("export", export.iqn))
        self.exports[export.iqn] = replace(export)

    def unexport(self, iqn):
        self.calls.append(("unexport", iqn))
        self.exports.pop(iqn, None)

    def list_exports(self):
        return dict(self.exports)

    def refresh_size(self, iqn):
        self.calls.append(("refresh", iqn))

    def alive(self):
        return self.up

    def restart(self):
        self.exports.clear()
        self.generation += 1


class Api:
    """The service in process behind its FastAPI app: real database, an in-memory target."""

    def __init__(self, tmp_path, pool_dir, database=None, **service_options):
        self.target = FakeTarget()
        self.store = Store(database or "sqlite:///%s/state.db" % tmp_path)
        self.store.migrate()
        self.service = Service(self.store, self.target, iqn_prefix=IQN_PREFIX, portals=["192.0.2.1:3260"],
                               admin_token=ADMIN_TOKEN, capacity_ttl=0, **service_options)
        self.pool_dir = pool_dir
        self.app = create_app(self.service)
        self.admin = self.client(ADMIN_TOKEN)

    def client(self, token=None):
        c = TestClient(self.app)
        if token:
            c.headers["Authorization"] = "Bearer " + token
        return c

    def tenant(self, name, **body):
        r = self.admin.post("/api/v1/tenants", json=dict(name=name, **body))
        assert r.status_code == 201, r.text
        r = self.admin.post("/api/v1/tokens", json={"name": "cluster", "tenant": name})
        assert r.status_code == 201, r.text
        return self.client(r.json()["token"])


# ------------------------------------------------------------------------------- real XFS
@pytest.fixture(scope="session")
def xfs_dir():
    """A loop-mounted XFS with reflink (removed at the end of the session)."""
    if not IS_ROOT or not shutil.which("mkfs.xfs"):
        pytest.skip("needs root and mkfs.xfs")
    top = tempfile.mkdtemp(prefix="pvesan-core-xfs-")
    image, mnt = os.path.join(top, "fs.img"), os.path.join(top, "mnt")
    os.mkdir(mnt)
    subprocess.run(["truncate", "-s", "8G", image], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", image], check=True)
    subprocess.run(["mount", "-o", "loop", image, mnt], check=True)
    yield mnt
    subprocess.run(["umount", "-l", mnt], check=False)  # mount -o loop frees the loop device
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def pool_dir(xfs_dir):
    path = tempfile.mkdtemp(dir=xfs_dir, prefix="pool-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------- real tgtd
class Tgtd:
    """A private tgtd: ``tgtd -f -C <control> --iscsi portal=127.0.0.1:<port>``."""

    def __init__(self):
        self.port = free_port()
        # tgtd accepts control ports up to 32767; pick one no other tgtd on this machine uses
        self.control = next(c for c in range(10000 + self.port % 20000, 32768)
                            if not os.path.exists("/var/run/tgtd/socket.%d" % c))
        self.proc = None

    def url(self, iqn, user=None, password=None, query=""):
        """libiscsi URL of LUN 1 of ``iqn`` on this tgtd's portal."""
        auth = "%s%%%s@" % (user, password) if user else ""
        return "iscsi://%s127.0.0.1:%d/%s/1%s" % (auth, self.port, iqn, query)

    def tgtadm(self, *args, check=True):
        return subprocess.run(["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args],
                              capture_output=True, text=True, check=check)

    def start(self):
        # -t 2: two I/O threads per LUN instead of 16 (hundreds of LUNs in the concurrency tests)
        self.proc = subprocess.Popen(["tgtd", "-f", "-t", "2", "-C", str(self.control), "--iscsi",
                                      "portal=127.0.0.1:%d" % self.port],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.tgtadm("--mode", "system", "--op", "show", check=False).returncode == 0,
                   what="tgtd to start")

    def kill(self):
        """Crash it: tgtd keeps no state, so every target is gone."""
        self.proc.kill()
        self.proc.wait()

    def targets(self) -> list[str]:
        out = self.tgtadm("--mode", "target", "--op", "show").stdout
        return [line.split()[2] for line in out.splitlines() if line.startswith("Target ")]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            out = self.tgtadm("--mode", "target", "--op", "show", check=False).stdout
            for line in out.splitlines():
                if line.startswith("Target "):
                    self.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid",
                                line.split()[1].rstrip(":"), check=False)
            self.tgtadm("--mode", "system", "--op", "delete", check=False)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        for suffix in ("", ".lock"):
            path = "/var/run/tgtd/socket.%d%s" % (self.control, suffix)
            if os.path.exists(path):
                os.unlink(path)


@pytest.fixture(scope="module")
def tgtd_daemon():
    if not IS_ROOT or not shutil.which("tgtd"):
        pytest.skip("needs root and tgt")
    daemon = Tgtd()
    daemon.start()
    yield daemon
    daemon.stop()


# ------------------------------------------------------------------------------- real PostgreSQL
@pytest.fixture(scope="session")
def postgres_url():
    """A private PostgreSQL 15 server on a unix socket in a temp dir, run as user postgres."""
    bindir = "/usr/lib/postgresql/15/bin"
    if not IS_ROOT or not os.path.exists(bindir + "/initdb"):
        pytest.skip("needs root and postgresql-15")
    top = tempfile.mkdtemp(prefix="pvesan-pg-")
    os.chmod(top, 0o755)
    data, sock = os.path.join(top, "data"), os.path.join(top, "sock")
    os.mkdir(sock)
    shutil.chown(top, "postgres", "postgres")
    shutil.chown(sock, "postgres", "postgres")

    def as_pg(*argv, check=True):
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, check=check)

    as_pg(bindir + "/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    port = free_port()
    as_pg(bindir + "/pg_ctl", "-D", data, "-w", "-l", os.path.join(top, "log"), "start", "-o",
          "-k %s -p %d -c listen_addresses='' -c fsync=off -c max_connections=100" % (sock, port))
    as_pg(bindir + "/createdb", "-h", sock, "-p", str(port), "pvesan")
    try:
        yield "postgresql://postgres@/pvesan?host=%s&port=%d" % (sock, port)
    finally:
        as_pg(bindir + "/pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def pg_database(postgres_url):
    """A fresh, empty database on the session's server."""
    import psycopg
    name = "t%d" % int(time.monotonic_ns() % 10**12)
    admin = psycopg.connect(postgres_url, autocommit=True)
    admin.execute("CREATE DATABASE %s" % name)
    url = postgres_url.replace("/pvesan?", "/%s?" % name)
    yield url
    admin.execute("DROP DATABASE %s WITH (FORCE)" % name)
    admin.close()


# ------------------------------------------------------------------------------- the real server
@pytest.fixture(scope="session")
def tls_cert():
    top = tempfile.mkdtemp(prefix="pvesan-tls-")
    cert, key = os.path.join(top, "cert.pem"), os.path.join(top, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=pvesan-test",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    yield cert, key
    shutil.rmtree(top, ignore_errors=True)


class Server:
    """One ``pvesan-service`` process (restartable, killable) with its config and CLI helper."""

    def __init__(self, workdir, tgtd, pool_path, tls, database=None, extra=None):
        self.workdir = workdir
        self.port = free_port()
        self.cert, self.key = tls
        self.url = "https://127.0.0.1:%d" % self.port
        self.tgtd = tgtd
        self.config = os.path.join(workdir, "pvesan.yml")
        self.log = os.path.join(workdir, "server.log")
        import yaml
        cfg = {
            "listen": "127.0.0.1:%d" % self.port, "tls_cert": self.cert, "tls_key": self.key,
            "database": database or "sqlite:///" + os.path.join(workdir, "state.db"),
            "admin_token": ADMIN_TOKEN, "secret_key_file": os.path.join(workdir, "secret.key"),
            "iqn_prefix": IQN_PREFIX, "portals": ["127.0.0.1:%d" % tgtd.port],
            "target": {"driver": "tgt", "control_port": tgtd.control},
            "pools": [{"name": "xfs", "kind": "file", "tags": ["ssd"], "options": {"path": pool_path}}],
            "service_types": [{"name": "gold", "pool_tags": ["ssd"], "default": True}],
            "reconcile_interval": 0.5, "access_log": False, "metrics_public": False,
        }
        cfg.update(extra or {})
        with open(self.config, "w") as fh:
            yaml.safe_dump(cfg, fh)
        self.proc = None

    def start(self):
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "pvesan_service.server", "-c", self.config],
                                     stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        wait_until(self._up, timeout=60, what="pvesan-service on %s (log %s)" % (self.url, self.log))

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError("pvesan-service exited with %s:\n%s" % (self.proc.returncode, open(self.log).read()[-3000:]))
        try:
            return self.client(ADMIN_TOKEN).get("/healthz").status_code == 200
        except Exception:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def client(self, token=None, timeout=60):
        import ssl
        import httpx
        headers = {"Authorization": "Bearer " + token} if token else {}
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=self.cert), headers=headers,
                            timeout=timeout)

    def cli(self, *args, token=None, json_out=True, env_extra=None):
        env = dict(os.environ, PVESAN_API_URL=self.url, PVESAN_TOKEN=token or ADMIN_TOKEN, PVESAN_CA=self.cert)
        env.update(env_extra or {})
        argv = [sys.executable, "-m", "pvesan_service.cli"] + (["--json"] if json_out else []) + list(args)
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture(scope="module")
def server_factory(tgtd_daemon, xfs_dir, tls_cert, tmp_path_factory):
    """Make servers on the module's tgtd; every server and its pool directory is cleaned up."""
    if not all(shutil.which(t) for t in E2E_TOOLS):
        pytest.skip("needs " + ", ".join(E2E_TOOLS))
    made = []

    def make(**kw):
        workdir = str(tmp_path_factory.mktemp("srv"))
        pool = tempfile.mkdtemp(dir=xfs_dir, prefix="pool-")
        srv = Server(workdir, tgtd_daemon, pool, tls_cert, **kw)
        srv.pool_path = pool
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.stop()
        shutil.rmtree(srv.pool_path, ignore_errors=True)
    for iqn in tgtd_daemon.targets():  # nothing of ours may stay exported
        tid = [line.split()[1].rstrip(":") for line in tgtd_daemon.tgtadm("--mode", "target", "--op", "show").stdout.splitlines()
               if line.startswith("Target ") and line.split()[2] == iqn]
        for t in tid:
            tgtd_daemon.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid", t, check=False)
