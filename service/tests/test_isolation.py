"""Tenants as adversaries: a real pvesan-service over HTTPS, a real tgtd, QEMU's libiscsi client
(qemu-io) and libiscsi's iscsi-ls for discovery.

Each test is an attack that worked against the service before schema 2 (tenant B logging in to
tenant A's target with a password B chose, discovery listing every tenant's targets, read-only
tokens reading CHAP secrets, ...).  Each must fail now, and the victim must keep working.
"""
from __future__ import annotations

import http.server
import os
import socket
import sqlite3
import ssl
import stat
import subprocess
import threading
import time

import pytest

from conftest import ADMIN_TOKEN, IQN_PREFIX, image_opts, needs_e2e, qemu_io, wait_until

pytestmark = [pytest.mark.e2e, needs_e2e]

NODE_A = "iqn.2026-11.org.pvesan.test:cluster-a-node1"  # tenant A's Proxmox node
NODE_B = "iqn.2026-11.org.pvesan.test:cluster-b-node1"  # tenant B's


@pytest.fixture(scope="module")
def srv(server_factory):
    old = os.umask(0o022)  # a usual umask: the service must not depend on it for its files' modes
    try:
        s = server_factory(extra={"access_log": True})
        s.start()
    finally:
        os.umask(old)
    yield s
    s.stop()


def make_tenant(srv, name, **body):
    admin = srv.client(ADMIN_TOKEN)
    r = admin.post("/api/v1/tenants", json=dict(name=name, **body))
    assert r.status_code == 201, r.text
    token = admin.post("/api/v1/tokens", json={"name": "pve", "tenant": name}).json()["token"]
    return srv.client(token)


@pytest.fixture(scope="module")
def alpha(srv):
    """The victim: secure defaults (generated tenant CHAP) and its node in the ACL."""
    return make_tenant(srv, "alpha", initiators=[NODE_A])


@pytest.fixture(scope="module")
def beta(srv):
    """The attacker: a tenant of the same service with a token of its own."""
    return make_tenant(srv, "beta", initiators=[NODE_B])


def write(vol, pattern, **kw):
    r = qemu_io(image_opts(vol, **kw), "write -P 0x%02x 0 64k" % pattern)
    return r.returncode == 0 and "wrote " in r.stdout


def reads(vol, pattern, **kw):
    r = qemu_io(image_opts(vol, **kw), "read -P 0x%02x 0 64k" % pattern)
    return r.returncode == 0 and "Pattern verification failed" not in r.stdout


def victim_volume(alpha, name, **body):
    r = alpha.post("/api/v1/volumes", json=dict(name=name, size="8M", **body))
    assert r.status_code == 201, r.text
    vol = r.json()
    assert write(vol, 0xa1, initiator=NODE_A)
    return vol


def assert_takeover_fails(victim, thief_password):
    """The thief's password opens nothing, from the victim's node or the thief's; the victim's own
    login and data are intact."""
    user = victim["export"]["chap"]["user"]
    for node in (NODE_A, NODE_B):
        assert not write(victim, 0x66, chap=(user, thief_password), initiator=node)
    assert reads(victim, 0xa1, initiator=NODE_A)


def test_chosen_chap_user_of_another_tenant_is_refused(srv, alpha, beta):
    victim = victim_volume(alpha, "vm-100-disk-0", chap={"user": "alpha-node", "password": "alpha-secret-123"})
    for attempt in ({"name": "vm-900-disk-0", "size": "8M", "chap": {"user": "alpha-node", "password": "beta-chose-this"}},
                    {"name": "vm-901-disk-0", "size": "8M",
                     "chap": {"user": "beta-own", "password": "beta-secret-1234", "mutual": {"user": "alpha-node"}}}):
        r = beta.post("/api/v1/volumes", json=attempt)
        assert r.status_code == 409 and "not available" in r.json()["detail"], r.text
        assert "alpha" not in r.json()["detail"].replace("alpha-node", "")  # the owner is not named
    assert_takeover_fails(victim, "beta-chose-this")


def test_generated_chap_user_is_unguessable_and_cannot_be_taken(srv, alpha, beta):
    victim = victim_volume(alpha, "vm-101-disk-0")  # the tenant's generated credentials
    user = victim["export"]["chap"]["user"]
    # not derived from anything an initiator sees (the IQN, the volume id)
    assert victim["id"][2:] not in user and user not in victim["export"]["iqn"]
    # suppose B learned the name anyway: every way of claiming it is refused
    bvol = beta.post("/api/v1/volumes", json={"name": "vm-902-disk-0", "size": "8M"}).json()
    for method, path, body in [
            ("POST", "/api/v1/volumes", {"name": "vm-903-disk-0", "size": "8M", "chap": {"user": user, "password": "beta-chose-this"}}),
            ("PATCH", "/api/v1/volumes/vm-902-disk-0", {"chap": {"user": user, "password": "beta-chose-this"}}),
            ("PATCH", "/api/v1/volumes/vm-902-disk-0", {"chap": {"user": "beta-2", "password": "beta-chose-this",
                                                                 "mutual": {"user": user, "password": "beta-mutual-99"}}})]:
        r = beta.request(method, path, json=body)
        assert r.status_code == 409, (method, path, r.text)
    assert_takeover_fails(victim, "beta-chose-this")
    assert write(bvol, 0xb2, initiator=NODE_B)  # the attacker's own volume works as before


def test_tenant_chap_of_another_tenant_is_refused(srv, alpha):
    victim = victim_volume(alpha, "vm-102-disk-0")
    user = victim["export"]["chap"]["user"]
    admin = srv.client(ADMIN_TOKEN)
    gamma = make_tenant(srv, "gamma", initiators=[NODE_B])
    r = admin.patch("/api/v1/tenants/gamma", json={"chap": {"user": user, "password": "gamma-chose-this"}})
    assert r.status_code == 409, r.text
    r = srv.client(ADMIN_TOKEN).post("/api/v1/tenants", json={"name": "delta", "chap": {"user": user, "password": "x" * 16}})
    assert r.status_code == 409 and srv.client(ADMIN_TOKEN).get("/api/v1/tenants/delta").status_code == 404
    assert_takeover_fails(victim, "gamma-chose-this")
    assert gamma.get("/api/v1/volumes").status_code == 200


def test_a_comma_cannot_smuggle_another_account_into_tgtd(srv, alpha, beta):
    """tgtd reads "user=...,password=..." split on commas: a secret with ",user=<victim>" would
    re-create the victim's account with the attacker's secret."""
    victim = victim_volume(alpha, "vm-103-disk-0")
    user = victim["export"]["chap"]["user"]
    r = beta.post("/api/v1/volumes", json={"name": "vm-904-disk-0", "size": "8M",
                                           "chap": {"user": "beta-3", "password": "beta-secret-99,user=" + user}})
    assert r.status_code == 422, r.text
    assert_takeover_fails(victim, "beta-secret-99")


def test_mutual_chap_equal_to_chap_is_a_422_and_dropping_mutual_works(srv, alpha, tgtd_daemon):
    for body in ({"user": "same-u", "password": "secret-one-111", "mutual": {"user": "same-u", "password": "secret-two-222"}},
                 {"user": "u-one", "password": "same-secret-1", "mutual": {"user": "u-two", "password": "same-secret-1"}}):
        r = alpha.post("/api/v1/volumes", json={"name": "vm-104-disk-0", "size": "8M", "chap": body})
        assert r.status_code == 422 and "must differ" in r.text, r.text
    r = srv.client(ADMIN_TOKEN).post("/api/v1/tenants", json={"name": "zero", "chap": {
        "user": "0", "password": "0" * 12, "mutual": {"user": "0", "password": "1" * 12}}})
    assert r.status_code == 422, r.text
    vol = alpha.post("/api/v1/volumes", json={"name": "vm-104-disk-0", "size": "8M", "chap": {
        "user": "mut-u", "password": "secret-one-111", "mutual": {"user": "mut-t", "password": "secret-two-222"}}}).json()
    r = alpha.patch("/api/v1/volumes/vm-104-disk-0", json={"chap": {"user": "mut-u", "password": "secret-one-111"}})
    assert r.status_code == 200, r.text
    assert r.json()["export"]["chap"]["mutual"] is None
    assert "mut-t" not in tgtd_daemon.tgtadm("--mode", "account", "--op", "show").stdout
    assert write(r.json(), 0x44, initiator=NODE_A)
    # the tenant path that answered 503 before: mutual on, then a rotation without it
    follower = victim_volume(alpha, "vm-109-disk-0")
    assert srv.client(ADMIN_TOKEN).patch("/api/v1/tenants/alpha", json={"chap": {"mutual": {}}}).status_code == 200
    assert srv.client(ADMIN_TOKEN).patch("/api/v1/tenants/alpha", json={"chap": {}}).status_code == 200
    rotated = alpha.get("/api/v1/volumes/vm-109-disk-0").json()
    assert rotated["export"]["chap"]["password"] != follower["export"]["chap"]["password"]
    assert reads(rotated, 0xa1, initiator=NODE_A)  # the new secret logs in
    assert not reads(follower, 0xa1, initiator=NODE_A)  # the old one no longer does
    assert vol["id"]


def discover(srv, initiator):
    portal = "127.0.0.1:%d" % srv.tgtd.port
    r = subprocess.run(["iscsi-ls", "-i", initiator, "iscsi://" + portal], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return {line.split()[0][len("Target:"):] for line in r.stdout.splitlines() if line.startswith("Target:")}


def test_discovery_shows_a_tenant_only_its_own_targets(srv, alpha, beta):
    victim = victim_volume(alpha, "vm-105-disk-0")
    bvol = beta.post("/api/v1/volumes", json={"name": "vm-905-disk-0", "size": "8M"}).json()
    mine_a = {v["iqn"] for v in alpha.get("/api/v1/volumes").json()}
    mine_b = {v["iqn"] for v in beta.get("/api/v1/volumes").json()}
    seen_b = {iqn for iqn in discover(srv, NODE_B) if iqn.startswith(IQN_PREFIX)}
    assert bvol["export"]["iqn"] in seen_b and not seen_b & mine_a
    assert victim["export"]["iqn"] in discover(srv, NODE_A) and not discover(srv, NODE_A) & mine_b
    assert not {iqn for iqn in discover(srv, "iqn.2026-11.org.example:stranger") if iqn.startswith(IQN_PREFIX)} & (mine_a | mine_b)
    for iqn in mine_a | mine_b:  # new IQNs say nothing about their tenant
        assert "alpha" not in iqn and "beta" not in iqn


def test_readonly_tokens_see_no_secret(srv, alpha):
    victim_volume(alpha, "vm-106-disk-0")
    admin = srv.client(ADMIN_TOKEN)
    ro = srv.client(admin.post("/api/v1/tokens", json={"name": "ro", "tenant": "alpha", "readonly": True}).json()["token"])
    ro_admin = srv.client(admin.post("/api/v1/tokens", json={"name": "ro-admin", "readonly": True}).json()["token"])
    secret = alpha.get("/api/v1/volumes/vm-106-disk-0").json()["export"]["chap"]["password"]
    assert secret
    for client, path, params in [(ro, "/api/v1/volumes/vm-106-disk-0", None), (ro, "/api/v1/volumes", {"detail": True}),
                                 (ro, "/api/v1/tenants/alpha", None), (ro_admin, "/api/v1/tenants", None),
                                 (ro_admin, "/api/v1/tenants/alpha", None),
                                 (ro_admin, "/api/v1/volumes/vm-106-disk-0", {"tenant": "alpha"})]:
        r = client.get(path, params=params)
        assert r.status_code == 200, (path, r.text)
        assert secret not in r.text and '"password":null' in r.text.replace(" ", ""), (path, r.text)
    assert ro.get("/api/v1/volumes/vm-106-disk-0").json()["export"]["chap"]["user"]  # the name stays visible


def test_state_files_are_private_and_secrets_sealed(srv, alpha):
    victim = victim_volume(alpha, "vm-107-disk-0", chap={"user": "sealed-user", "password": "plain-text-secret-42"})
    db = os.path.join(srv.workdir, "state.db")
    for path in (db, db + "-wal", db + "-shm", os.path.join(srv.workdir, "secret.key")):
        assert os.path.exists(path), path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, (path, oct(os.stat(path).st_mode))
    for path in (db, db + "-wal"):
        with open(path, "rb") as fh:
            assert b"plain-text-secret-42" not in fh.read()
    conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        assert conn.execute("SELECT COUNT(*) FROM tenants WHERE chap IS NOT NULL").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM volumes WHERE chap IS NOT NULL").fetchone()[0] == 0
        sealed = conn.execute("SELECT secret FROM chap_accounts WHERE username = 'sealed-user'").fetchone()[0]
    finally:
        conn.close()
    assert sealed.startswith("v1:") and "plain-text" not in sealed
    assert victim["export"]["chap"]["password"] == "plain-text-secret-42"


def test_create_while_tgtd_is_down_leaves_nothing(srv, alpha, tgtd_daemon):
    before = set(os.listdir(srv.pool_path))
    tgtd_daemon.kill()
    try:
        wait_until(lambda: srv.client().get("/healthz").json()["target_up"] is False, what="the service to see tgtd down")
        r = alpha.post("/api/v1/volumes", json={"name": "vm-108-disk-0", "size": "8M"})
        assert r.status_code == 503 and "tgtd" in r.json()["detail"], r.text
        assert alpha.get("/api/v1/volumes/vm-108-disk-0").status_code == 404
        assert set(os.listdir(srv.pool_path)) == before
    finally:
        tgtd_daemon.start()
    admin = srv.client(ADMIN_TOKEN)
    known = {v["iqn"] for t in admin.get("/api/v1/tenants").json()
             for v in admin.get("/api/v1/volumes", params={"tenant": t["name"]}).json()}
    wait_until(lambda: known <= set(tgtd_daemon.targets()), what="the re-export after tgtd came back")
    time.sleep(1)  # one more reconciler round: the failed create must stay gone
    assert alpha.get("/api/v1/volumes/vm-108-disk-0").status_code == 404
    assert not [t for t in tgtd_daemon.targets() if t.startswith(IQN_PREFIX) and t not in known]
    r = alpha.post("/api/v1/volumes", json={"name": "vm-108-disk-0", "size": "16M"})  # a retry, another size
    assert r.status_code == 201, r.text
    assert write(r.json(), 0x08, initiator=NODE_A)


def test_access_log_keeps_no_query_string(srv, alpha):
    alpha.get("/api/v1/status", params={"token": "leaked-by-mistake-1234"})
    wait_until(lambda: "/api/v1/status" in open(srv.log).read(), what="the access log line")
    log = open(srv.log).read()
    assert "leaked-by-mistake-1234" not in log and "token=" not in log


# ------------------------------------------------------------------------------- the CLI and http://
class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list = []
    redirect_to = None

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).seen.append(dict(self.headers))
        if self.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        self.end_headers()
        if not self.redirect_to:
            self.wfile.write(b'{"admin": true}')

    def log_message(self, *args):
        pass


def plain_http_server(redirect_to=None):
    handler = type("Handler", (_Recorder,), {"seen": [], "redirect_to": redirect_to})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


def test_cli_sends_no_token_over_http(srv):
    server, seen = plain_http_server()
    url = "http://127.0.0.1:%d" % server.server_address[1]
    try:
        r = srv.cli("whoami", env_extra={"PVESAN_API_URL": url})
        assert r.returncode == 2 and "https://" in r.stderr, (r.returncode, r.stderr)
        assert seen.seen == []  # refused before connecting
        r = srv.cli("--insecure-http", "whoami", env_extra={"PVESAN_API_URL": url})
        assert r.returncode == 0 and len(seen.seen) == 1  # said in so many words: allowed
    finally:
        server.shutdown()


def test_cli_follows_no_redirect(srv):
    sink, sink_seen = plain_http_server()
    server, seen = plain_http_server(redirect_to="http://127.0.0.1:%d/api/v1/whoami" % sink.server_address[1])
    try:
        r = srv.cli("--insecure-http", "whoami", env_extra={"PVESAN_API_URL": "http://127.0.0.1:%d" % server.server_address[1]})
        assert r.returncode != 0 and "redirect" in r.stderr, r.stderr
        assert len(seen.seen) == 1 and sink_seen.seen == []  # the token did not follow the redirect
    finally:
        server.shutdown()
        sink.shutdown()


# ------------------------------------------------------------------------------- slow and greedy HTTP clients
LIMITS = {"request_timeout": 2, "tls_handshake_timeout": 2, "max_connections_per_client": 8, "max_body_bytes": 65536,
          "max_header_bytes": 8192}


@pytest.fixture(scope="module")
def guarded(server_factory):
    s = server_factory(extra={"http": LIMITS})
    s.start()
    yield s
    s.stop()


def tls_connection(srv, source="127.0.0.1"):
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10, source_address=(source, 0))
    ctx = ssl.create_default_context(cafile=srv.cert)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def closed_by_server(conn, within):
    """True when the server closes ``conn`` within ``within`` seconds (a bounded wait for behaviour)."""
    conn.settimeout(within)
    try:
        return conn.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True
    except socket.timeout:
        return False


def test_slow_clients_are_cut_off_and_others_still_served(guarded):
    slow = [tls_connection(guarded) for dummy in range(LIMITS["max_connections_per_client"])]
    stop = threading.Event()

    def dribble():
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200
        for i in range(len(request)):
            if stop.is_set():
                return
            for c in slow:
                try:
                    c.send(request[i:i + 1])
                except OSError:
                    pass
            time.sleep(0.2)

    threading.Thread(target=dribble, daemon=True).start()
    try:
        # one connection more from the same address is refused at once
        extra = tls_connection(guarded)
        assert closed_by_server(extra, within=10)
        # another client is served meanwhile
        import httpx
        transport = httpx.HTTPTransport(local_address="127.0.0.2", verify=ssl.create_default_context(cafile=guarded.cert))
        with httpx.Client(transport=transport, base_url=guarded.url, timeout=10) as c2:
            assert c2.get("/healthz").status_code == 200
        # the slow ones are closed once their request deadline passes
        assert all(closed_by_server(c, within=30) for c in slow)
    finally:
        stop.set()
        for c in slow:
            c.close()


def test_a_silent_tls_client_is_dropped(guarded):
    raw = socket.create_connection(("127.0.0.1", guarded.port), timeout=30)
    try:
        assert closed_by_server(raw, within=30)  # no ClientHello: dropped after tls_handshake_timeout
    finally:
        raw.close()


def test_oversized_requests_are_refused(guarded):
    c = guarded.client(ADMIN_TOKEN)
    r = c.post("/api/v1/tenants", content=b"{" + b" " * (LIMITS["max_body_bytes"] + 10) + b"}",
               headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = guarded.client(ADMIN_TOKEN).get("/healthz", headers={"X-Big": "b" * (LIMITS["max_header_bytes"] + 10)})
    assert r.status_code == 431
    assert guarded.client(ADMIN_TOKEN).get("/healthz").status_code == 200
