"""A pool's capacity under thin provisioning, in process on a real file system of its own: the
over-subscription limit and the thick reserve refuse what would not fit (creates, grows and
clones, also when they race), the allocated bytes are measured and reported, and the alarms log
each crossing once, degrade /healthz and show in /metrics.  SQLite and PostgreSQL."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading

import pytest

from conftest import ADMIN_TOKEN, IS_ROOT, Api, MiB, wait_until
from pvesan_service import config as config_mod
from pvesan_service.reconciler import Reconciler

POOL_MiB = 512  # the smallest XFS mkfs.xfs makes is 300 MiB


@pytest.fixture
def small_fs():
    """A 512 MiB loop-mounted XFS: one pool's whole file system, so its fill is ours to set."""
    if not IS_ROOT or not shutil.which("mkfs.xfs"):
        pytest.skip("needs root and mkfs.xfs")
    top = tempfile.mkdtemp(prefix="pvesan-capacity-")
    image, mnt = os.path.join(top, "fs.img"), os.path.join(top, "mnt")
    os.mkdir(mnt)
    subprocess.run(["truncate", "-s", "%dM" % POOL_MiB, image], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", image], check=True)
    subprocess.run(["mount", "-o", "loop", image, mnt], check=True)
    yield mnt
    subprocess.run(["umount", "-l", mnt], check=False)
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request, tmp_path, small_fs):
    database = request.getfixturevalue("pg_database") if request.param == "postgres" else None
    a = Api(tmp_path, small_fs, database)
    yield a
    a.store.close()


def make_pool(api, **limits):
    r = api.admin.post("/api/v1/pools", json=dict(name="small", kind="file", options={"path": api.pool_dir}, **limits))
    assert r.status_code == 201, r.text
    return r.json()


def usable(pool) -> int:
    return pool["usable"]


def names(client) -> list[str]:
    return [v["name"] for v in client.get("/api/v1/volumes").json()]


def gauges(api) -> dict[str, float]:
    """/metrics as {'name{labels}': value}."""
    lines = api.admin.get("/metrics").text.splitlines()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))}


def fill(path, name, nbytes) -> None:
    """Real bytes in the pool's file system that no volume owns (another user of the disk);
    allocated at once, as appending writes would leave XFS's speculative preallocation behind."""
    fd = os.open(os.path.join(path, name), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, nbytes)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_thin_creates_grows_and_clones_stop_at_the_subscription_limit(api):
    pool = make_pool(api, max_subscription=2)
    assert pool["max_subscription"] == 2 and pool["reserve_percent"] == 0 and pool["provisioned"] == 0
    limit = 2 * usable(pool)
    t = api.tenant("alpha")
    size = (limit // 3) // MiB * MiB
    for i in range(3):
        assert t.post("/api/v1/volumes", json={"name": "vm-%d-disk-0" % i, "size": size}).status_code == 201
    before = sorted(os.listdir(api.pool_dir))
    r = t.post("/api/v1/volumes", json={"name": "vm-9-disk-0", "size": limit - 3 * size + MiB})
    assert r.status_code == 409 and "pool small would be over-subscribed" in r.json()["detail"], r.text
    assert "%d bytes provisioned" % (3 * size) in r.json()["detail"]
    assert "vm-9-disk-0" not in names(t) and sorted(os.listdir(api.pool_dir)) == before  # nothing left behind

    r = t.post("/api/v1/volumes/vm-0-disk-0/resize", json={"size": size + limit - 3 * size + MiB})
    assert r.status_code == 409 and "over-subscribed" in r.json()["detail"], r.text
    assert t.get("/api/v1/volumes/vm-0-disk-0").json()["size"] == size  # unchanged
    assert os.stat(os.path.join(api.pool_dir, t.get("/api/v1/volumes/vm-0-disk-0").json()["id"] + ".img")).st_size == size

    r = t.post("/api/v1/volumes/vm-0-disk-0/clone", json={"name": "vm-10-disk-0"})
    assert r.status_code == 409 and "over-subscribed" in r.json()["detail"], r.text
    assert "vm-10-disk-0" not in names(t)

    # the administrator raises the limit: the same requests pass
    r = api.admin.patch("/api/v1/pools/small", json={"max_subscription": 4})
    assert r.status_code == 200 and r.json()["max_subscription"] == 4 and r.json()["tags"] == []
    assert t.post("/api/v1/volumes/vm-0-disk-0/clone", json={"name": "vm-10-disk-0"}).status_code == 201
    assert t.post("/api/v1/volumes/vm-1-disk-0/resize", json={"size": 2 * size}).status_code == 200
    shown = api.admin.get("/api/v1/pools/small").json()
    assert shown["provisioned"] == 5 * size and shown["subscription"] == round(5 * size / shown["usable"], 3)
    # null: no limit at all
    assert api.admin.patch("/api/v1/pools/small", json={"max_subscription": None}).json()["max_subscription"] is None
    assert t.post("/api/v1/volumes", json={"name": "vm-11-disk-0", "size": 10 * limit}).status_code == 201


def test_the_default_limit_is_twenty_times_the_usable_bytes(api):
    pool = make_pool(api)
    assert pool["max_subscription"] == 20
    t = api.tenant("alpha")
    over = 20 * usable(pool) + MiB
    r = t.post("/api/v1/volumes", json={"name": "vm-1-disk-0", "size": over})
    assert r.status_code == 409 and "20 x %d usable bytes" % usable(pool) in r.json()["detail"], r.text


def test_a_create_goes_to_a_pool_that_can_take_it(api):
    for name, limit in (("a", 0.5), ("b", 1)):
        path = os.path.join(api.pool_dir, name)
        os.mkdir(path)
        r = api.admin.post("/api/v1/pools", json={"name": name, "kind": "file", "options": {"path": path},
                                                  "tags": ["ssd"], "max_subscription": limit})
        assert r.status_code == 201, r.text
    t = api.tenant("alpha")
    size = int(api.admin.get("/api/v1/pools/a").json()["usable"] * 0.4) // MiB * MiB
    pools = [t.post("/api/v1/volumes", json={"name": "vm-%d-disk-0" % i, "size": size}).json()["pool"] for i in range(2)]
    assert pools[1] != pools[0] and sorted(pools) == ["a", "b"]  # the second no longer fits in a
    r = t.post("/api/v1/volumes", json={"name": "vm-3-disk-0", "size": 2 * size})
    assert r.status_code == 409 and "pool a would be" in r.json()["detail"] and "pool b would be" in r.json()["detail"]


def test_thick_volumes_need_free_bytes_beyond_the_reserve(api):
    pool = make_pool(api, reserve_percent=50)
    assert pool["usable"] == int(pool["total"] * 0.5)
    api.admin.post("/api/v1/service-types", json={"name": "thick", "thin": False})
    t = api.tenant("alpha")
    free = pool["available"] - (pool["total"] - pool["usable"])
    r = t.post("/api/v1/volumes", json={"name": "vm-1-disk-0", "size": free + MiB, "service_type": "thick"})
    assert r.status_code == 409 and "pool small lacks" in r.json()["detail"] and "reserve of 50%" in r.json()["detail"]
    half = (free // 2) // MiB * MiB
    assert t.post("/api/v1/volumes", json={"name": "vm-1-disk-0", "size": half, "service_type": "thick"}).status_code == 201
    # the first one took its bytes: a second of the same size no longer fits... just barely
    r = t.post("/api/v1/volumes", json={"name": "vm-2-disk-0", "size": half + 16 * MiB, "service_type": "thick"})
    assert r.status_code == 409, r.text
    # thin volumes are held to the subscription of the usable half, not to the free bytes
    assert t.post("/api/v1/volumes", json={"name": "vm-3-disk-0", "size": free * 2}).status_code == 201


def test_racing_creates_cannot_pass_the_limit_together(api):
    """Eight creates at once where three fit: three succeed (SQLite serializes writers;
    PostgreSQL locks the pool's row for the check)."""
    pool = make_pool(api, max_subscription=1)
    t = api.tenant("alpha")
    size = (usable(pool) // 3) // MiB * MiB
    codes = []

    def create(i):
        codes.append(api.client(t.headers["Authorization"][7:]).post(
            "/api/v1/volumes", json={"name": "vm-%d-disk-0" % i, "size": size}).status_code)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(codes) == [201] * 3 + [409] * 5
    assert api.admin.get("/api/v1/pools/small").json()["provisioned"] == 3 * size


def test_racing_grows_cannot_pass_the_quota_together(api):
    make_pool(api, max_subscription=None)
    t = api.tenant("alpha", quota_bytes=100 * MiB)
    for i in range(4):
        assert t.post("/api/v1/volumes", json={"name": "vm-%d-disk-0" % i, "size": "10M"}).status_code == 201
    codes = []

    def grow(i):
        codes.append(api.client(t.headers["Authorization"][7:]).post(
            "/api/v1/volumes/vm-%d-disk-0/resize" % i, json={"size": "40M"}).status_code)

    threads = [threading.Thread(target=grow, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(codes) == [200, 200, 409, 409]  # 40 + 40 + 10 + 10 fits in 100, a third grow would not
    sizes = [v["size"] for v in t.get("/api/v1/volumes").json()]
    assert sorted(sizes) == [10 * MiB, 10 * MiB, 40 * MiB, 40 * MiB]
    for v in t.get("/api/v1/volumes").json():  # the backing files agree with the rows
        assert os.stat(os.path.join(api.pool_dir, v["id"] + ".img")).st_size == v["size"]


def test_allocated_bytes_are_measured_and_reported(api):
    make_pool(api)
    t = api.tenant("alpha")
    vol = t.post("/api/v1/volumes", json={"name": "vm-1-disk-0", "size": "64M"}).json()
    assert vol["allocated"] == 0
    assert t.get("/api/v1/volumes").json()[0]["allocated"] is None  # not measured yet
    with open(os.path.join(api.pool_dir, vol["id"] + ".img"), "r+b") as fh:  # what a guest would write
        fh.seek(16 * MiB)
        fh.write(b"\x01" * (8 * MiB))
        os.fsync(fh.fileno())
    reconciler = Reconciler(api.service, allocation_interval=30)
    reconciler.check()  # the first pass measures
    assert api.service.volumes.refresh_allocated() == 0  # nothing changed since
    assert t.get("/api/v1/volumes").json()[0]["allocated"] == 8 * MiB
    assert t.get("/api/v1/volumes", params={"detail": True}).json()[0]["allocated"] == 8 * MiB
    assert t.get("/api/v1/volumes/vm-1-disk-0").json()["allocated"] == 8 * MiB
    status = t.get("/api/v1/status").json()
    assert status["tenant"]["allocated_bytes"] == 8 * MiB and status["tenant"]["provisioned_bytes"] == 64 * MiB
    assert status["pools"][0]["allocated"] == 8 * MiB and status["pools"][0]["provisioned"] == 64 * MiB
    metrics = gauges(api)
    assert metrics['pvesan_volume_allocated_bytes{tenant="alpha"}'] == 8 * MiB
    assert metrics['pvesan_pool_bytes{kind="provisioned",pool="small"}'] == 64 * MiB
    assert metrics['pvesan_pool_bytes{kind="allocated",pool="small"}'] == 8 * MiB
    assert metrics['pvesan_pool_subscription{pool="small"}'] == status["pools"][0]["subscription"]


def test_alarms_log_each_crossing_once_and_degrade_health(api, caplog):
    pool = make_pool(api)
    anon = api.client()
    assert anon.get("/healthz").json() == {"status": "ok", "database": True, "schema_version": 3, "target_up": True,
                                           "alarms": []}
    caplog.set_level(logging.INFO, logger="pvesan.pools")
    fill(api.pool_dir, "ballast-1", int(pool["total"] * 0.87) - pool["used"])
    for _poll in range(3):
        health = anon.get("/healthz").json()
    assert health["status"] == "degraded" and health["target_up"] is True
    assert len(health["alarms"]) == 1 and health["alarms"][0].startswith("pool small is 8")
    assert "(warning at 85%)" in health["alarms"][0]
    assert gauges(api)['pvesan_pool_alarm{pool="small"}'] == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "pool small is 8" in warnings[0].getMessage()

    fill(api.pool_dir, "ballast-2", int(pool["total"] * 0.09))
    for _poll in range(3):
        health = anon.get("/healthz").json()
    assert "(critical at 95%)" in health["alarms"][0]
    assert api.admin.get("/api/v1/pools/small").json()["alarm"] == 2
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1

    for name in ("ballast-1", "ballast-2"):
        os.unlink(os.path.join(api.pool_dir, name))
    os.sync()  # XFS frees unlinked files' blocks in the background
    wait_until(lambda: anon.get("/healthz").json()["status"] == "ok", what="the pool's alarm to clear")
    assert any("used again: alarm level 2 -> 0" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)


def test_limits_are_validated(api):
    make_pool(api)
    for body in ({"max_subscription": 0}, {"max_subscription": -1}, {"max_subscription": 1001},
                 {"reserve_percent": 100}, {"reserve_percent": -1}, {"max_subscription": "lots"}):
        r = api.admin.patch("/api/v1/pools/small", json=body)
        assert r.status_code == 422, (body, r.text)
    r = api.admin.post("/api/v1/pools", json={"name": "other", "kind": "file", "options": {"path": api.pool_dir},
                                              "reserve_percent": 150})
    assert r.status_code == 422 and "reserve_percent" in r.text
    assert api.admin.get("/api/v1/pools/small").json()["max_subscription"] == 20  # unchanged
    t = api.tenant("alpha")
    assert t.patch("/api/v1/pools/small", json={"max_subscription": 1000}).status_code == 403


@pytest.mark.parametrize("setting, message", [
    ({"pool_alarms": [0.95, 0.85]}, "pool_alarms must be two used fractions"),
    ({"pool_alarms": [0.9]}, "pool_alarms must be two used fractions"),
    ({"pool_alarms": [0.5, 1.5]}, "pool_alarms must be two used fractions"),
    ({"pools": [{"name": "p", "kind": "file", "max_subscriptions": 2}]}, "each pool needs name and kind"),
    ({"pools": [{"kind": "file"}]}, "each pool needs name and kind"),
])
def test_config_limits_are_checked(tmp_path, setting, message):
    import yaml
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(dict({"insecure_http": True, "admin_token": ADMIN_TOKEN}, **setting)))
    with pytest.raises(config_mod.ConfigError, match=message):
        config_mod.load(str(path))
