"""API behaviour and errors, in process: real SQLite, real file backend on a loop-mounted XFS,
in-memory target (the real tgtd runs in test_e2e.py)."""
from __future__ import annotations

import os

import pytest

from conftest import IQN_PREFIX, Api, MiB
from pvesan_service.reconciler import reconcile

GiB = 1 << 30


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request, tmp_path, pool_dir):
    database = request.getfixturevalue("pg_database") if request.param == "postgres" else None
    a = Api(tmp_path, pool_dir, database)
    r = a.admin.post("/api/v1/pools", json={"name": "xfs", "kind": "file", "options": {"path": pool_dir}, "tags": ["ssd"]})
    assert r.status_code == 201, r.text
    yield a
    a.store.close()


def test_auth_required_and_bad_tokens(api):
    anon = api.client()
    assert anon.get("/api/v1/volumes").status_code == 401
    assert api.client("nope").get("/api/v1/volumes").status_code == 401
    assert api.client("pvs_abc_def").get("/api/v1/volumes").status_code == 401
    assert anon.get("/healthz").json()["status"] == "ok"
    assert anon.get("/metrics").status_code == 401
    assert "pvesan_operations_total" in api.admin.get("/metrics").text


def test_tokens_hashed_listed_without_secret_and_revocable(api):
    t = api.tenant("alpha")
    r = api.admin.post("/api/v1/tokens", json={"name": "ro", "tenant": "alpha", "readonly": True})
    secret = r.json()["token"]
    with api.store.tx() as tx:
        rows = tx.execute("SELECT hash FROM tokens").all()
    assert all(secret not in row["hash"] and len(row["hash"]) == 64 for row in rows)
    listed = api.admin.get("/api/v1/tokens", params={"tenant": "alpha"}).json()
    assert {x["name"] for x in listed} == {"cluster", "ro"} and all("token" not in x for x in listed)
    ro = api.client(secret)
    assert ro.get("/api/v1/volumes").status_code == 200
    r = ro.post("/api/v1/volumes", json={"name": "vm-1-disk-0", "size": "1G"})
    assert r.status_code == 403 and "read-only" in r.json()["detail"]
    tid = r = [x["id"] for x in listed if x["name"] == "ro"][0]
    assert t.delete("/api/v1/tokens/%s" % tid).status_code == 204  # a tenant may revoke its own tokens
    assert ro.get("/api/v1/volumes").status_code == 401
    assert t.get("/api/v1/whoami").json() == {"admin": False, "tenant": "alpha", "readonly": False,
                                              "token_id": listed[0]["id"]}


def test_tenant_isolation_is_404_not_403(api):
    a, b = api.tenant("alpha"), api.tenant("beta")
    assert a.post("/api/v1/volumes", json={"name": "vm-100-disk-0", "size": "1G"}).status_code == 201
    for method, path, body in [("get", "/api/v1/volumes/vm-100-disk-0", None),
                               ("delete", "/api/v1/volumes/vm-100-disk-0", None),
                               ("post", "/api/v1/volumes/vm-100-disk-0/resize", {"size": "2G"}),
                               ("post", "/api/v1/volumes/vm-100-disk-0/rename", {"name": "x"}),
                               ("post", "/api/v1/volumes/vm-100-disk-0/snapshots", {"name": "s1"}),
                               ("get", "/api/v1/volumes/vm-100-disk-0/snapshots", None),
                               ("post", "/api/v1/volumes/vm-100-disk-0/clone", {"name": "c"}),
                               ("get", "/api/v1/tenants/alpha", None)]:
        r = b.request(method.upper(), path, json=body)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
    assert b.get("/api/v1/volumes").json() == []
    assert b.get("/api/v1/volumes", params={"tenant": "alpha"}).status_code == 404
    # tenant B may use the same name: names are unique per tenant
    assert b.post("/api/v1/volumes", json={"name": "vm-100-disk-0", "size": "1G"}).status_code == 201
    # tokens of another tenant cannot be seen or revoked
    alpha_tokens = api.admin.get("/api/v1/tokens", params={"tenant": "alpha"}).json()
    assert b.delete("/api/v1/tokens/%s" % alpha_tokens[0]["id"]).status_code == 404
    assert all(x["tenant"] == "beta" for x in b.get("/api/v1/tokens").json())
    # admin-only endpoints
    assert b.get("/api/v1/tenants").status_code == 403
    assert b.post("/api/v1/pools", json={"name": "p", "kind": "file", "options": {"path": "/tmp"}}).status_code == 403


def test_volume_lifecycle(api):
    t = api.tenant("alpha")
    r = t.post("/api/v1/volumes", json={"name": "vm-100-disk-0", "size": "10G", "tags": ["web"]})
    assert r.status_code == 201, r.text
    vol = r.json()
    assert vol["size"] == 10 * GiB and vol["vmid"] == 100 and vol["state"] == "ready" and vol["pool"] == "xfs"
    iqn = vol["export"]["iqn"]
    # new IQNs carry no tenant name (discovery shows them)
    assert iqn == "%s:%s" % (IQN_PREFIX, vol["id"]) and vol["export"]["lun"] == 1
    assert vol["export"]["urls"] == ["iscsi://192.0.2.1:3260/%s/1" % iqn]
    assert api.target.exports[iqn].backing_path == os.path.join(api.pool_dir, vol["id"] + ".img")
    assert os.path.getsize(api.target.exports[iqn].backing_path) == 10 * GiB
    # idempotent create; conflicting create
    again = t.post("/api/v1/volumes", json={"name": "vm-100-disk-0", "size": 10 * GiB})
    assert again.status_code == 200 and again.json()["id"] == vol["id"]
    r = t.post("/api/v1/volumes", json={"name": "vm-100-disk-0", "size": "20G"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    # list filters
    t.post("/api/v1/volumes", json={"name": "vm-101-disk-0", "size": "1M"})
    t.post("/api/v1/volumes", json={"name": "base-9-disk-0", "size": "1M", "tags": ["web", "tpl"]})

    def names(**q):
        return [v["name"] for v in t.get("/api/v1/volumes", params=q).json()]

    assert names() == ["base-9-disk-0", "vm-100-disk-0", "vm-101-disk-0"]
    assert names(prefix="vm-10") == ["vm-100-disk-0", "vm-101-disk-0"]
    assert names(vmid=9) == ["base-9-disk-0"]
    assert names(tag="web") == ["base-9-disk-0", "vm-100-disk-0"]
    assert names(tag="we") == []
    full = t.get("/api/v1/volumes", params={"detail": True, "prefix": "vm-100"}).json()
    assert full[0]["export"]["iqn"] == iqn and full[0]["size"] == 10 * GiB
    summary = t.get("/api/v1/volumes", params={"prefix": "vm-100"}).json()
    assert summary[0]["iqn"] == iqn and "export" not in summary[0] and summary[0]["vmid"] == 100
    # grow; shrink refused
    r = t.post("/api/v1/volumes/vm-100-disk-0/resize", json={"size": "12G"})
    assert r.status_code == 200 and r.json()["size"] == 12 * GiB and ("refresh", iqn) in api.target.calls
    assert os.path.getsize(api.target.exports[iqn].backing_path) == 12 * GiB
    r = t.post("/api/v1/volumes/vm-100-disk-0/resize", json={"size": "1G"})
    assert r.status_code == 422 and "shrink" in r.json()["detail"]
    # rename keeps the export and the backend id
    r = t.post("/api/v1/volumes/vm-100-disk-0/rename", json={"name": "vm-200-disk-0"})
    assert r.status_code == 200 and r.json()["vmid"] == 200 and r.json()["export"]["iqn"] == iqn
    assert t.post("/api/v1/volumes/vm-200-disk-0/rename", json={"name": "vm-101-disk-0"}).status_code == 409
    assert t.get("/api/v1/volumes/vm-100-disk-0").status_code == 404
    # delete: export and file gone
    assert t.delete("/api/v1/volumes/vm-200-disk-0").status_code == 204
    assert iqn not in api.target.exports and not os.path.exists(os.path.join(api.pool_dir, vol["id"] + ".img"))
    assert t.delete("/api/v1/volumes/vm-200-disk-0").status_code == 404


def _write(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _read(path, offset, n):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def test_snapshots_rollback_clones_and_dependents(api):
    t = api.tenant("alpha")
    vol = t.post("/api/v1/volumes", json={"name": "vm-1-disk-0", "size": "64M"}).json()
    path = api.target.exports[vol["export"]["iqn"]].backing_path
    _write(path, 0, b"A" * 4096)
    r = t.post("/api/v1/volumes/vm-1-disk-0/snapshots", json={"name": "Before_Upgrade"})
    assert r.status_code == 201, r.text
    assert t.post("/api/v1/volumes/vm-1-disk-0/snapshots", json={"name": "Before_Upgrade"}).status_code == 200
    _write(path, 0, b"B" * 4096)
    r = t.post("/api/v1/volumes/vm-1-disk-0/snapshots/Before_Upgrade/rollback")
    assert r.status_code == 200, r.text
    assert _read(path, 0, 4096) == b"A" * 4096
    assert vol["export"]["iqn"] in api.target.exports  # exported again after the rollback
    # clone from the snapshot: own export, same content, independent
    r = t.post("/api/v1/volumes/vm-1-disk-0/clone", json={"name": "vm-2-disk-0", "snapshot": "Before_Upgrade"})
    assert r.status_code == 201, r.text
    clone = r.json()
    assert clone["parent"] == "vm-1-disk-0" and clone["parent_snapshot"] == "Before_Upgrade"
    cpath = api.target.exports[clone["export"]["iqn"]].backing_path
    assert _read(cpath, 0, 4096) == b"A" * 4096
    _write(cpath, 0, b"C" * 4096)
    assert _read(path, 0, 4096) == b"A" * 4096
    assert t.post("/api/v1/volumes/vm-1-disk-0/clone", json={"name": "vm-2-disk-0", "snapshot": "Before_Upgrade"}).status_code == 200
    # clone of a template without a snapshot uses the implicit base snapshot
    assert t.post("/api/v1/volumes/vm-1-disk-0/clone", json={"name": "vm-3-disk-0"}).status_code == 201
    # dependents block deletion unless cascade
    r = t.delete("/api/v1/volumes/vm-1-disk-0/snapshots/Before_Upgrade")
    assert r.status_code == 409 and "vm-2-disk-0" in r.json()["detail"]
    r = t.delete("/api/v1/volumes/vm-1-disk-0")
    assert r.status_code == 409 and "vm-2-disk-0" in r.json()["detail"] and "cascade" in r.json()["detail"]
    assert t.delete("/api/v1/volumes/vm-3-disk-0").status_code == 204
    assert t.delete("/api/v1/volumes/vm-1-disk-0", params={"cascade": "true"}).status_code == 204
    assert t.get("/api/v1/volumes").json() == [] and api.target.exports == {}
    assert [f for f in os.listdir(api.pool_dir) if f.endswith(".img")] == []
    assert t.get("/api/v1/volumes/vm-1-disk-0/snapshots").status_code == 404


def test_summary_list_matches_detail(api):
    """The summary list (JSON built by the database) has the fields of the full objects."""
    t = api.tenant("alpha")
    assert t.get("/api/v1/volumes").json() == []
    t.post("/api/v1/volumes", json={"name": "vm-7-disk-0", "size": "4M", "tags": ["web", "a:b=c"]})
    assert t.post("/api/v1/volumes/vm-7-disk-0/snapshots", json={"name": "Snap.1"}).status_code == 201
    t.post("/api/v1/volumes/vm-7-disk-0/clone", json={"name": "vm-8-disk-0", "snapshot": "Snap.1"})
    t.post("/api/v1/volumes", json={"name": "data_x", "size": "1M"})
    keys = ["id", "name", "size", "vmid", "tags", "state", "pool", "parent", "parent_snapshot", "allocated", "created_at"]
    for q in ({}, {"prefix": "vm-"}, {"tag": "web"}, {"vmid": 8}, {"tag": "nope"}):
        r = t.get("/api/v1/volumes", params=q)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        summary = r.json()
        full = t.get("/api/v1/volumes", params=dict(q, detail=True)).json()
        assert [dict((k, v[k]) for k in keys) | {"iqn": v["export"]["iqn"]} for v in full] == summary, q
    summary = t.get("/api/v1/volumes").json()
    assert [v["name"] for v in summary] == ["data_x", "vm-7-disk-0", "vm-8-disk-0"]
    clone = summary[2]
    assert clone["parent"] == "vm-7-disk-0" and clone["parent_snapshot"] == "Snap.1" and clone["vmid"] == 8
    assert summary[1]["tags"] == ["a:b=c", "web"] or summary[1]["tags"] == ["web", "a:b=c"]
    assert summary[0]["vmid"] is None and summary[0]["tags"] == [] and summary[0]["pool"] == "xfs"
    assert list(summary[0]) == ["id", "name", "size", "vmid", "tags", "state", "pool", "parent", "parent_snapshot",
                                "iqn", "allocated", "created_at"]
    # the service's Python form of the list says the same
    scope = api.service.auth.scope(api.service.auth.authenticate(t.headers["Authorization"].split()[1]), None)
    assert api.service.volumes.list_(scope) == summary


def test_chap_per_tenant_per_volume_and_initiators(api):
    chap = {"user": "cluster1", "password": "secret-secret-1"}
    t = api.tenant("alpha", chap=chap, initiators=["iqn.1993-08.org.debian:01:node1"])
    v = t.post("/api/v1/volumes", json={"name": "vm-1-disk-0", "size": "1M"}).json()
    exp = api.target.exports[v["export"]["iqn"]]
    assert (exp.chap.user, exp.chap.password) == ("cluster1", "secret-secret-1")
    assert exp.initiators == ["iqn.1993-08.org.debian:01:node1"] and v["export"]["chap"]["user"] == "cluster1"
    own = {"user": "vol", "password": "another-secret-2", "mutual": {"user": "tgt", "password": "mutual-secret-3"}}
    v2 = t.post("/api/v1/volumes", json={"name": "vm-2-disk-0", "size": "1M", "chap": own, "initiators": []}).json()
    exp2 = api.target.exports[v2["export"]["iqn"]]
    assert exp2.chap.mutual_user == "tgt" and exp2.initiators == []
    # changing the tenant's CHAP re-exports the volumes that follow it, not the others
    r = api.admin.patch("/api/v1/tenants/alpha", json={"chap": {"user": "cluster2", "password": "secret-secret-9"}})
    assert r.status_code == 200, r.text
    assert api.target.exports[v["export"]["iqn"]].chap.user == "cluster2"
    assert api.target.exports[v2["export"]["iqn"]].chap.user == "vol"
    r = t.patch("/api/v1/volumes/vm-2-disk-0", json={"initiators": ["10.0.0.5"], "chap": None})
    assert r.status_code == 200, r.text
    exp2 = api.target.exports[v2["export"]["iqn"]]
    assert exp2.initiators == ["10.0.0.5"] and exp2.chap.user == "cluster2"
    # a service type with CHAP generates per-volume secrets for tenants without their own
    api.admin.post("/api/v1/service-types", json={"name": "secure", "chap": True})
    b = api.tenant("beta")
    v3 = b.post("/api/v1/volumes", json={"name": "d", "size": "1M", "service_type": "secure"}).json()
    assert v3["export"]["chap"]["user"].startswith("pvesan-") and len(v3["export"]["chap"]["password"]) >= 12
    bad = t.post("/api/v1/volumes", json={"name": "x", "size": "1M", "chap": {"user": "u", "password": "short"}})
    assert bad.status_code == 422


def test_service_types_and_pool_selection(api, pool_dir, xfs_dir, tmp_path):
    import tempfile
    hdd = tempfile.mkdtemp(dir=xfs_dir)
    r = api.admin.post("/api/v1/pools", json={"name": "slow", "kind": "file", "options": {"path": hdd}, "tags": ["hdd", "backup"]})
    assert r.status_code == 201, r.text
    api.admin.post("/api/v1/service-types", json={"name": "fast", "pool_tags": ["ssd"], "block_size": 4096, "default": True})
    api.admin.post("/api/v1/service-types", json={"name": "archive", "pool_tags": ["hdd"], "thin": False})
    t = api.tenant("alpha")
    assert t.post("/api/v1/volumes", json={"name": "a", "size": "1M"}).json()["pool"] == "xfs"
    v = t.post("/api/v1/volumes", json={"name": "b", "size": "1M", "service_type": "archive"}).json()
    assert v["pool"] == "slow" and v["thin"] is False and v["block_size"] == 512
    assert t.get("/api/v1/volumes/a").json()["block_size"] == 4096
    r = t.post("/api/v1/volumes", json={"name": "c", "size": "1M", "service_type": "archive", "query_exclude": ["backup"]})
    assert r.status_code == 409 and "no pool matches" in r.json()["detail"]
    assert t.post("/api/v1/volumes", json={"name": "c", "size": "1M", "service_type": "nope"}).status_code == 404
    st = t.get("/api/v1/status", params={"service_type": "archive"}).json()
    assert st["total"] == [p for p in st["pools"] if p["name"] == "slow"][0]["total"] > 0
    assert st["tenant"]["volumes"] == 2 and st["tenant"]["provisioned_bytes"] == 2 * MiB
    assert api.admin.delete("/api/v1/pools/slow").status_code == 409
    assert api.admin.delete("/api/v1/service-types/archive").status_code == 204


def test_status_is_real_and_quota_caps_it(api):
    t = api.tenant("alpha", quota_bytes=3 * MiB)
    st = t.get("/api/v1/status").json()
    vfs = os.statvfs(api.pool_dir)
    assert st["pools"][0]["total"] == vfs.f_blocks * vfs.f_frsize
    assert abs(st["pools"][0]["available"] - vfs.f_bavail * vfs.f_frsize) < 64 * MiB
    assert st["total"] == 3 * MiB and st["available"] == 3 * MiB and st["active"]
    t.post("/api/v1/volumes", json={"name": "a", "size": "2M"})
    st = t.get("/api/v1/status").json()
    assert st["used"] == 2 * MiB and st["available"] == MiB
    r = t.post("/api/v1/volumes", json={"name": "b", "size": "2M"})
    assert r.status_code == 409 and "quota" in r.json()["detail"]
    admin_view = api.admin.get("/api/v1/status").json()
    assert admin_view["tenant"] is None and admin_view["pools"][0]["name"] == "xfs"


@pytest.mark.parametrize("body", [
    {"name": "Bad Name", "size": "1G"}, {"name": "ok", "size": "-1"}, {"name": "ok", "size": 0},
    {"name": "ok", "size": "10X"}, {"name": "ok", "size": "9999P"}, {"name": "ok"}, {"name": "ok", "size": True},
    {"name": "ok", "size": "1G", "tags": ["bad tag"]}, {"name": "ok", "size": "1G", "extra": 1},
    {"name": "_x", "size": "1G"}, {"name": "x" * 64, "size": "1G"}, {"name": "ok", "size": 2 ** 70},
])
def test_bad_requests_are_4xx_with_a_reason(api, body):
    t = api.tenant("alpha")
    r = t.post("/api/v1/volumes", json=body)
    assert 400 <= r.status_code < 500 and r.json()["detail"], (body, r.status_code, r.text)


def test_bad_json_and_admin_needs_tenant(api):
    t = api.tenant("alpha")
    r = t.post("/api/v1/volumes", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = api.admin.post("/api/v1/volumes", json={"name": "a", "size": "1M"})
    assert r.status_code == 422 and "tenant" in r.json()["detail"]
    r = api.admin.post("/api/v1/volumes", params={"tenant": "alpha"}, json={"name": "a", "size": "1M"})
    assert r.status_code == 201 and t.get("/api/v1/volumes/a").status_code == 200
    assert api.admin.delete("/api/v1/tenants/alpha").status_code == 409
    r = api.admin.post("/api/v1/pools", json={"name": "p2", "kind": "file", "options": {"path": "/nonexistent/x"}})
    assert r.status_code in (409, 422) and "/nonexistent/x" in r.json()["detail"]
    r = api.admin.post("/api/v1/pools", json={"name": "p3", "kind": "file", "options": {"bogus": "1"}})
    assert r.status_code == 422


def test_unknown_query_parameters_are_refused(api):
    """A misspelt filter must not list everything, nor an admin's misspelt tenant act on nothing."""
    t = api.tenant("alpha")
    t.post("/api/v1/volumes", json={"name": "vm-1-disk-0", "size": "1M"})
    r = t.get("/api/v1/volumes", params={"prefx": "vm-2-"})
    assert r.status_code == 422 and "'prefx'" in r.json()["detail"] and "prefix" in r.json()["detail"]
    r = api.admin.delete("/api/v1/volumes/vm-1-disk-0", params={"tenat": "alpha"})
    assert r.status_code == 422 and t.get("/api/v1/volumes/vm-1-disk-0").status_code == 200
    assert t.get("/api/v1/volumes", params={"prefix": "vm-1-"}).status_code == 200
    assert api.client().get("/healthz", params={"verbose": "1"}).status_code == 422


def test_reconciler_repairs_target_and_undoes_half_creates(api):
    t = api.tenant("alpha")
    v = t.post("/api/v1/volumes", json={"name": "keep", "size": "1M"}).json()
    # a crash mid-create: row 'creating' with its file, and an orphan file and a stray target
    svc = api.service
    tenant = svc.tenants.row("alpha")
    with svc.store.tx() as tx:
        tx.execute("INSERT INTO volumes (id, tenant_id, name, pool_id, size, thin, block_size, tags, chap_source, state, "
                   "created_at, updated_at) SELECT 'v-00000000000000aa', ?, 'half', pool_id, size, thin, block_size, '[]', "
                   "'none', 'creating', created_at, updated_at FROM volumes WHERE id = ?", (tenant["id"], v["id"]))
    for vid in ("v-00000000000000aa", "v-00000000000000bb"):
        with open(os.path.join(api.pool_dir, vid + ".img"), "wb") as f:
            f.truncate(MiB)
    stray = IQN_PREFIX + ":alpha.v-00000000000000cc"
    api.target.exports[stray] = api.target.exports[v["export"]["iqn"]]
    api.target.restart()  # and the target lost everything
    fixed = reconcile(svc, "test")
    assert fixed["undone_creates"] == 1 and fixed["orphan_volumes"] == 1 and fixed["exported"] == 1
    assert set(api.target.exports) == {v["export"]["iqn"]}
    assert sorted(f for f in os.listdir(api.pool_dir) if f.endswith(".img")) == [v["id"] + ".img"]
    assert [x["name"] for x in t.get("/api/v1/volumes").json()] == ["keep"]
    assert reconcile(svc, "test") == dict.fromkeys(fixed, 0)


def test_reconciler_thread_notices_target_restart(api):
    from pvesan_service.reconciler import Reconciler
    t = api.tenant("alpha")
    v = t.post("/api/v1/volumes", json={"name": "keep", "size": "1M"}).json()
    rec = Reconciler(api.service, interval=3600)
    rec._last_gen = api.target.generation
    assert rec.check() is False
    api.target.restart()
    assert rec.check() is True and v["export"]["iqn"] in api.target.exports
    api.target.up = False
    assert rec.check() is False and api.service.exports.up is False
    assert api.client().get("/healthz").json()["status"] == "degraded"
    api.target.up = True
    assert rec.check() is True


def test_a_failed_create_leaves_nothing_even_when_cleanup_fails_first(api):
    """The target fails the export (it died mid-create) and, once, the cleanup as well (still hung):
    the client gets a 503, the volume is never visible nor exported, the reconciler finishes the
    removal, and a retry with another size creates the volume anew."""
    from pvesan_service.targets.base import TargetError, TargetNotRunning
    t = api.tenant("alpha", initiators=["ALL"])
    target = api.target
    real_export, real_unexport = target.export, target.unexport
    failures = {"export": 1, "unexport": 1}

    def export(exp):
        if failures["export"]:
            failures["export"] -= 1
            raise TargetError("tgtd went away")
        real_export(exp)

    def unexport(iqn):
        if failures["unexport"]:
            failures["unexport"] -= 1
            raise TargetError("tgtd does not answer")
        real_unexport(iqn)

    target.export, target.unexport = export, unexport
    r = t.post("/api/v1/volumes", json={"name": "vm-1-disk-0", "size": "4M"})
    assert r.status_code == 503, r.text
    assert t.get("/api/v1/volumes/vm-1-disk-0").status_code == 404
    assert t.get("/api/v1/volumes").json() == []
    with api.store.tx() as tx:
        assert [row["state"] for row in tx.execute("SELECT state FROM volumes").all()] == ["deleting"]
    fixed = reconcile(api.service, "test")
    assert fixed["finished_deletes"] == 1 and fixed["exported"] == 0 and target.exports == {}
    assert [f for f in os.listdir(api.pool_dir) if f.endswith(".img")] == []
    # the same when the target daemon is simply down: nothing to unexport there, nothing left at once
    failures.update(export=1)

    def not_running(iqn):
        raise TargetNotRunning("tgtd is not running")

    target.unexport = not_running
    assert t.post("/api/v1/volumes", json={"name": "vm-1-disk-0", "size": "4M"}).status_code == 503
    with api.store.tx() as tx:
        assert tx.execute("SELECT COUNT(*) AS n FROM volumes").one()["n"] == 0
    target.unexport = real_unexport
    r = t.post("/api/v1/volumes", json={"name": "vm-1-disk-0", "size": "8M"})
    assert r.status_code == 201 and r.json()["size"] == 8 * MiB, r.text


def test_a_retry_finishes_a_delete_left_unfinished(api):
    t = api.tenant("alpha", initiators=["ALL"])
    vol = t.post("/api/v1/volumes", json={"name": "vm-2-disk-0", "size": "4M"}).json()
    with api.store.tx() as tx:  # a delete that could not finish (the reconciler has not run yet)
        tx.execute("UPDATE volumes SET state = 'deleting' WHERE id = ?", (vol["id"],))
    r = t.post("/api/v1/volumes", json={"name": "vm-2-disk-0", "size": "8M"})
    assert r.status_code == 201 and r.json()["id"] != vol["id"], r.text
    assert vol["export"]["iqn"] not in api.target.exports


def test_an_acl_the_target_cannot_enforce_is_a_422(api):
    """LIO's ACLs take initiator names only: an address is refused before anything is stored,
    instead of failing the export with a 503."""
    api.target.acl_problem = lambda acl: "addresses are not supported" if any("." in a and a[0].isdigit() for a in acl) else None
    t = api.tenant("alpha", initiators=["ALL"])
    r = t.post("/api/v1/volumes", json={"name": "vm-3-disk-0", "size": "4M", "initiators": ["10.0.0.5"]})
    assert r.status_code == 422 and "addresses" in r.json()["detail"]
    assert t.get("/api/v1/volumes").json() == []
    r = api.admin.patch("/api/v1/tenants/alpha", json={"initiators": ["10.0.0.5"]})
    assert r.status_code == 422 and api.admin.get("/api/v1/tenants/alpha").json()["initiators"] == ["ALL"]
