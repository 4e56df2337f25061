"""End to end: a real pvesan-service process over HTTPS, a real tgtd, volumes on a loop-mounted
XFS, and QEMU's libiscsi initiator (qemu-io) / libiscsi-bin tools reading and writing the data."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest

from conftest import ADMIN_TOKEN, IQN_PREFIX, TEST_INITIATOR, MiB, image_opts, libiscsi_url, needs_e2e, qemu_io, wait_until

pytestmark = [pytest.mark.e2e, needs_e2e]


def assert_pattern(target, pattern, offset, length):
    r = qemu_io(target, "read -P 0x%02x %d %d" % (pattern, offset, length))
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout + r.stderr and "read " in r.stdout, \
        (target, r.stdout, r.stderr)


def write_pattern(target, pattern, offset, length):
    r = qemu_io(target, "write -P 0x%02x %d %d" % (pattern, offset, length))
    assert r.returncode == 0 and "wrote " in r.stdout, (r.stdout, r.stderr)


@pytest.fixture(scope="module")
def srv(server_factory):
    s = server_factory()
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tenant(srv):
    admin = srv.client(ADMIN_TOKEN)
    # secure defaults: generated tenant CHAP, and an ACL with the initiator name the tests use
    assert admin.post("/api/v1/tenants", json={"name": "alpha", "initiators": [TEST_INITIATOR]}).status_code == 201
    token = admin.post("/api/v1/tokens", json={"name": "pve", "tenant": "alpha"}).json()["token"]
    return srv.client(token), token


def consistent(srv, tgtd, tenant="alpha", prefix=IQN_PREFIX):
    """Database, tgtd and pool agree: every volume exported once with its file, nothing else."""
    vols = srv.client(ADMIN_TOKEN).get("/api/v1/volumes", params={"tenant": tenant}).json()
    ours = sorted(t for t in tgtd.targets() if t.startswith(prefix + ":"))
    files = sorted(f[:-4] for f in os.listdir(srv.pool_path) if f.endswith(".img"))
    assert all(v["state"] == "ready" for v in vols)
    assert ours == sorted(v["iqn"] for v in vols), "tgtd targets differ from the database"
    assert files == sorted(v["id"] for v in vols), "pool files differ from the database"
    return vols


def test_data_survives_service_restart_and_tgtd_restart(srv, tenant, tgtd_daemon):
    t = tenant[0]
    vol = t.post("/api/v1/volumes", json={"name": "vm-100-disk-0", "size": "64M"}).json()
    url = image_opts(vol)
    write_pattern(url, 0xab, 0, MiB)
    write_pattern(url, 0xcd, 60 * MiB, 4096)
    assert_pattern(url, 0xab, 0, MiB)
    srv.stop()
    srv.start()
    assert_pattern(url, 0xab, 0, MiB)
    assert_pattern(url, 0xcd, 60 * MiB, 4096)
    # tgtd crash: every target is gone until the reconciler notices and re-exports
    tgtd_daemon.kill()
    wait_until(lambda: srv.client().get("/healthz").json()["target_up"] is False, what="service to see tgtd down")
    tgtd_daemon.start()
    wait_until(lambda: vol["export"]["iqn"] in tgtd_daemon.targets(), what="re-export after tgtd restart")
    assert_pattern(url, 0xab, 0, MiB)
    assert_pattern(url, 0xcd, 60 * MiB, 4096)
    consistent(srv, tgtd_daemon)
    assert t.delete("/api/v1/volumes/vm-100-disk-0").status_code == 204


def test_snapshot_rollback_clone_by_content(srv, tenant):
    t = tenant[0]
    vol = t.post("/api/v1/volumes", json={"name": "vm-101-disk-0", "size": "32M"}).json()
    url = image_opts(vol)
    write_pattern(url, 0x11, 0, MiB)
    assert t.post("/api/v1/volumes/vm-101-disk-0/snapshots", json={"name": "s1"}).status_code == 201
    write_pattern(url, 0x22, 0, MiB)
    assert_pattern(url, 0x22, 0, MiB)
    clone = t.post("/api/v1/volumes/vm-101-disk-0/clone", json={"name": "vm-102-disk-0", "snapshot": "s1"})
    assert clone.status_code == 201, clone.text
    curl = image_opts(clone.json())
    assert_pattern(curl, 0x11, 0, MiB)
    write_pattern(curl, 0x33, 0, MiB)
    r = t.post("/api/v1/volumes/vm-101-disk-0/snapshots/s1/rollback")
    assert r.status_code == 200, r.text
    assert_pattern(url, 0x11, 0, MiB)  # the snapshot's content, seen through the export
    assert_pattern(curl, 0x33, 0, MiB)  # the clone is independent
    assert t.delete("/api/v1/volumes/vm-101-disk-0").status_code == 409
    assert t.delete("/api/v1/volumes/vm-101-disk-0", params={"cascade": True}).status_code == 204


def test_resize_visible_to_initiator(srv, tenant):
    t = tenant[0]
    vol = t.post("/api/v1/volumes", json={"name": "vm-103-disk-0", "size": "16M"}).json()

    def capacity():
        r = subprocess.run(["iscsi-readcapacity16", *libiscsi_url(vol)], capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        return int(re.search(r"^Total size:\s*(\d+)", r.stdout, re.M).group(1))

    assert capacity() == 16 * MiB
    assert t.post("/api/v1/volumes/vm-103-disk-0/resize", json={"size": "48M"}).status_code == 200
    assert capacity() == 48 * MiB
    assert t.post("/api/v1/volumes/vm-103-disk-0/resize", json={"size": "8M"}).status_code == 422
    assert t.delete("/api/v1/volumes/vm-103-disk-0").status_code == 204


def test_chap_enforced(srv, tenant):
    t = tenant[0]
    chap = {"user": "pve-cluster", "password": "s3cret-passw0rd"}
    vol = t.post("/api/v1/volumes", json={"name": "vm-104-disk-0", "size": "8M", "chap": chap}).json()
    assert qemu_io(image_opts(vol, chap=False), "read 0 4096").returncode != 0
    assert qemu_io(image_opts(vol, chap=("pve-cluster", "wrong-password")), "read 0 4096").returncode != 0
    write_pattern(image_opts(vol), 0x5a, 0, 4096)
    assert_pattern(image_opts(vol, chap=("pve-cluster", "s3cret-passw0rd")), 0x5a, 0, 4096)
    # ACL: only the listed initiator may log in
    r = t.patch("/api/v1/volumes/vm-104-disk-0", json={"initiators": ["iqn.2026-11.test:allowed"]})
    assert r.status_code == 200, r.text
    assert_pattern(image_opts(vol, initiator="iqn.2026-11.test:allowed"), 0x5a, 0, 4096)
    assert qemu_io(image_opts(vol), "read 0 4096").returncode != 0  # the tenant's initiator is no longer listed
    assert t.delete("/api/v1/volumes/vm-104-disk-0").status_code == 204


def test_kill9_during_create_storm_then_restart_is_consistent(srv, tenant, tgtd_daemon):
    t, token = tenant
    created, errors = [], []
    stop = threading.Event()

    def worker(k):
        c = srv.client(token, timeout=30)
        for i in range(k, 100, 4):
            if stop.is_set():
                return
            try:
                r = c.post("/api/v1/volumes", json={"name": "storm-%03d" % i, "size": "4M"})
                if r.status_code in (200, 201):
                    created.append(r.json()["name"])
                else:
                    errors.append(r.status_code)
            except Exception:  # the server died under us: expected
                return

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    wait_until(lambda: len(created) >= 30, timeout=120, what="30 creates")
    srv.kill9()
    stop.set()
    for th in threads:
        th.join()
    assert not [e for e in errors if e >= 500]
    srv.start()  # start-up reconcile
    vols = consistent(srv, tgtd_daemon)
    names = {v["name"] for v in vols}
    assert set(created) <= names  # every acknowledged create survived and is exported
    # and the creates can simply be retried (idempotent) to finish the storm
    for i in range(100):
        assert t.post("/api/v1/volumes", json={"name": "storm-%03d" % i, "size": "4M"}).status_code in (200, 201)
    vols = consistent(srv, tgtd_daemon)
    assert len([v for v in vols if v["name"].startswith("storm-")]) == 100
    for i in range(100):
        assert t.delete("/api/v1/volumes/storm-%03d" % i).status_code == 204
    consistent(srv, tgtd_daemon)


def concurrent_create_delete(srv, token, tgtd, total, clients=16, tenant="alpha", prefix=IQN_PREFIX):
    """``clients`` threads create ``total`` volumes, every name by two clients at once, then
    delete the odd ones: no 5xx, one volume per name, database/tgtd/files agree."""
    statuses, lock = [], threading.Lock()
    ids: dict[str, set] = {}

    def client(k):
        c = srv.client(token, timeout=120)
        for i in range(total):
            if i % clients not in (k, (k + 1) % clients):
                continue
            r = c.post("/api/v1/volumes", json={"name": "cc-%03d" % i, "size": "1M"})
            with lock:
                statuses.append(r.status_code)
                if r.status_code in (200, 201):
                    ids.setdefault("cc-%03d" % i, set()).add(r.json()["id"])
        for i in range(total):  # then every client deletes the odd ones it made; a 404 means the other one did
            if i % clients == k and i % 2:
                r = c.delete("/api/v1/volumes/cc-%03d" % i)
                with lock:
                    statuses.append(r.status_code)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not [s for s in statuses if s >= 500], sorted(set(statuses))
    assert set(statuses) <= {200, 201, 204, 404}
    assert len(ids) == total and all(len(v) == 1 for v in ids.values()), "a name got two volumes"
    vols = consistent(srv, tgtd, tenant, prefix)
    names = sorted(v["name"] for v in vols if v["name"].startswith("cc-"))
    assert names == ["cc-%03d" % i for i in range(0, total, 2)]
    for n in names:
        assert srv.client(token).delete("/api/v1/volumes/" + n).status_code == 204
    consistent(srv, tgtd, tenant, prefix)


def test_16_concurrent_clients_500_volumes(srv, tenant, tgtd_daemon):
    concurrent_create_delete(srv, tenant[1], tgtd_daemon, 500)


@pytest.mark.postgres
def test_concurrent_clients_on_postgresql(server_factory, pg_database, tgtd_daemon):
    prefix = IQN_PREFIX + ".pg"  # its own targets on the shared tgtd: the other server must not see them as strays
    srv = server_factory(database=pg_database, extra={"iqn_prefix": prefix})
    srv.start()
    admin = srv.client(ADMIN_TOKEN)
    assert admin.post("/api/v1/tenants", json={"name": "pg", "initiators": [TEST_INITIATOR]}).status_code == 201
    token = admin.post("/api/v1/tokens", json={"name": "pve", "tenant": "pg"}).json()["token"]
    concurrent_create_delete(srv, token, tgtd_daemon, 120, tenant="pg", prefix=prefix)
    srv.stop()
    srv.start()  # the database outlives the process: nothing lost, nothing left over
    assert srv.client(token).get("/api/v1/volumes").json() == []
    srv.stop()


def test_cli_json_and_exit_codes(srv, tenant):
    token = tenant[1]
    r = srv.cli("volume", "create", "vm-300-disk-0", "8M", "--tag", "a,b", token=token)
    assert r.returncode == 0, r.stderr
    import json
    vol = json.loads(r.stdout)
    assert vol["size"] == 8 * MiB and vol["tags"] == ["a", "b"] and vol["export"]["lun"] == 1
    assert vol["export"]["wwid"] == "36" + "0" * 15 + vol["id"][2:]  # the volume's own (tgt scsi_id)
    r = srv.cli("volume", "list", "--vmid", "300", token=token)
    assert [v["name"] for v in json.loads(r.stdout)] == ["vm-300-disk-0"]
    r = srv.cli("volume", "show", "nope", token=token)
    assert r.returncode == 3 and json.loads(r.stdout)["error"]["status"] == 404
    r = srv.cli("volume", "create", "vm-300-disk-0", "16M", token=token)
    assert r.returncode == 4 and "already exists" in json.loads(r.stdout)["error"]["message"]
    r = srv.cli("volume", "create", "Bad", "1G", token=token)
    assert r.returncode == 8 and "name" in r.stderr
    assert srv.cli("whoami", token="pvs_x_y").returncode == 5
    assert srv.cli("whoami", env_extra={"PVESAN_API_URL": "https://127.0.0.1:1"}).returncode == 6
    assert srv.cli("whoami", env_extra={"PVESAN_CA": "/etc/ssl/certs/ca-certificates.crt"}).returncode == 6  # untrusted cert
    assert srv.cli("whoami", env_extra={"PVESAN_CA": "", "PVESAN_SSL_VERIFY": "0"}).returncode == 0
    r = srv.cli("status", token=token)
    st = json.loads(r.stdout)
    assert st["total"] > 0 and st["tenant"]["name"] == "alpha"
    assert srv.cli("snapshot", "create", "vm-300-disk-0", "snap1", token=token).returncode == 0
    r = srv.cli("snapshot", "list", "vm-300-disk-0", token=token)
    assert [s["name"] for s in json.loads(r.stdout)] == ["snap1"]
    assert srv.cli("volume", "clone", "vm-300-disk-0", "vm-301-disk-0", "--snapshot", "snap1", token=token).returncode == 0
    assert srv.cli("volume", "resize", "vm-300-disk-0", "16M", token=token).returncode == 0
    assert srv.cli("volume", "rename", "vm-301-disk-0", "vm-302-disk-0", token=token).returncode == 0
    r = srv.cli("volume", "delete", "vm-300-disk-0", token=token)
    assert r.returncode == 4 and "cascade" in r.stderr
    r = srv.cli("volume", "delete", "vm-300-disk-0", "--cascade", token=token)
    assert r.returncode == 0 and json.loads(r.stdout) == {"ok": True}
    r = srv.cli("volume", "list", token=token, json_out=False)
    assert r.returncode == 0
    r = srv.cli("--tenant", "alpha", "volume", "list")  # admin acting for a tenant
    assert r.returncode == 0 and json.loads(r.stdout) is not None
    assert srv.cli("bogus").returncode == 2


def test_cli_admin_commands(srv):
    """Every admin command once, as an operator types it (human output and --json)."""
    import json

    def ok(*args, json_out=True):
        r = srv.cli(*args, json_out=json_out)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return json.loads(r.stdout) if json_out else r.stdout

    assert ok("tenant", "create", "cli-t", "--initiator", "iqn.2026-12.org.example:n1", "--quota", "1G")["name"] == "cli-t"
    assert ok("tenant", "show", "cli-t")["quota_bytes"] == 1 << 30
    assert "cli-t" in [t["name"] for t in ok("tenant", "list")]
    assert ok("tenant", "update", "cli-t", "--quota", "none")["quota_bytes"] is None
    assert ok("token", "create", "ops", "--for-tenant", "cli-t")["token"].startswith("pvs_")
    assert [t["name"] for t in ok("token", "list", "--for-tenant", "cli-t")] == ["ops"]
    pool = ok("pool", "show", "xfs")
    assert pool["max_subscription"] == 20 and pool["provisioned"] >= 0 and "alarm" in pool
    changed = ok("pool", "update", "xfs", "--max-subscription", "5", "--reserve-percent", "10")
    assert (changed["max_subscription"], changed["reserve_percent"], changed["tags"]) == (5, 10, pool["tags"])
    assert ok("pool", "update", "xfs", "--max-subscription", "none", "--reserve-percent", "0")["max_subscription"] is None
    assert srv.cli("pool", "update", "xfs").returncode == 2  # nothing to change
    assert srv.cli("pool", "update", "xfs", "--max-subscription", "lots").returncode == 2
    assert "SUBSCRIPTION" in ok("pool", "list", json_out=False)
    assert ok("service-type", "create", "cli-st", "--pool-tag", "ssd", "--thick")["thin"] is False
    assert ok("service-type", "show", "cli-st")["pool_tags"] == ["ssd"]
    assert "cli-st" in [s["name"] for s in ok("service-type", "list")]
    assert ok("service-type", "delete", "cli-st") == {"ok": True}
    assert ok("health")["database"] is True and "alarms" in ok("health")
    assert set(ok("reconcile")) >= {"exported", "orphan_volumes"}
    assert ok("tenant", "delete", "cli-t") == {"ok": True}


def test_systemd_ready_only_when_exported_and_listening(srv, tenant, tgtd_daemon, tmp_path, monkeypatch):
    """The unit is Type=notify: READY=1 must mean serving, because a cluster manager brings the
    floating addresses up right after it. Targets dropped while the service was down (a head
    that took over starts a fresh tgtd) are back and the API answers at the moment of READY."""
    import socket
    t = tenant[0]
    vol = t.post("/api/v1/volumes", json={"name": "vm-102-disk-0", "size": "16M"}).json()
    srv.stop()
    for line in tgtd_daemon.tgtadm("--mode", "target", "--op", "show").stdout.splitlines():
        if line.startswith("Target ") and line.split()[2] == vol["export"]["iqn"]:
            tgtd_daemon.tgtadm("--mode", "target", "--op", "delete", "--force", "--tid", line.split()[1].rstrip(":"))
    assert vol["export"]["iqn"] not in tgtd_daemon.targets()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    srv.start()
    assert notify.recv(256) == b"READY=1"
    # what the service said at READY is what it does now (start() waited for /healthz anyway,
    # so check the export, which start() does not)
    assert vol["export"]["iqn"] in tgtd_daemon.targets()
    assert srv.client().get("/healthz").status_code == 200
    monkeypatch.delenv("NOTIFY_SOCKET")
    notify.close()
    assert t.delete("/api/v1/volumes/vm-102-disk-0").status_code == 204


def test_cli_rides_out_an_api_failover(server_factory):
    """While an HA pair fails over, nothing listens on the API address: with --retry-for the CLI
    (which the Proxmox plugin runs) keeps trying and succeeds once the service is up; without it,
    it fails at once with the reason. Only requests that never reached the service are repeated."""
    import time
    srv = server_factory()
    env = dict(os.environ, PVESAN_API_URL=srv.url, PVESAN_TOKEN=ADMIN_TOKEN, PVESAN_CA=srv.cert, PVESAN_CONFIG="/dev/null")
    argv = [sys.executable, "-m", "pvesan_service.cli", "--json"]
    quick = subprocess.run(argv + ["tenant", "list"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert quick.returncode != 0 and "cannot reach" in quick.stderr + quick.stdout
    waiting = subprocess.Popen(argv + ["--retry-for", "60", "tenant", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(2)
    assert waiting.poll() is None, "gave up before the service came up"
    srv.start()
    out, err = waiting.communicate(timeout=90)
    assert waiting.returncode == 0, err
    assert isinstance(json.loads(out), list)
    srv.stop()
