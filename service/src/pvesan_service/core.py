"""The service core: tenants, tokens, pools, service types, volumes, snapshots and clones.

The database is the source of truth.  Every operation that changes storage is two-phase:
1. a row is committed in a transitional state (``creating`` / ``deleting``);
2. the backend and the target are changed, then the row is committed ``ready`` (or removed).
A crash between the two leaves a transitional row that the reconciler finishes or undoes, so
there is never an orphan backing volume or target, nor a ``ready`` volume without its export.

Operations on one volume are serialised by a per-volume lock; uniqueness of names is enforced by
the database (a concurrent create of the same name waits for the first and then sees it).
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from . import chap as chaps
from .backends.base import VolumeBackend, make_backend
from .errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from .metrics import Metrics
from .secretbox import SecretBox, SecretBoxError
from .store import Store, StoreError, UniqueViolation, now
from .targets.base import ALL_INITIATORS, DATA_LUN, Chap, Export, TargetDriver, TargetNotRunning
from .units import align_size, check_name, check_snap_name, parse_size, vmid_of

log = logging.getLogger("pvesan.core")

BASE_SNAPSHOT = "__base__"  # implicit snapshot for clones of a template (user names cannot start with _)
TOKEN_PREFIX = "pvs_"
AUTH_CACHE_TTL = 5.0


def _j(value) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _unj(text, default=None):
    return default if text is None else json.loads(text)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Principal:
    """Who is calling: the admin, or a token of one tenant (optionally read-only)."""

    admin: bool
    tenant_id: Optional[str] = None
    tenant: Optional[str] = None
    readonly: bool = False
    token_id: Optional[str] = None


class KeyedLocks:
    """One lock per key (volume id), created on demand and dropped when unused."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[str, list] = {}

    @contextmanager
    def hold(self, key: str):
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        entry[0].acquire()
        try:
            yield
        finally:
            entry[0].release()
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]


class Service:
    def __init__(self, store: Store, target: TargetDriver, *, iqn_prefix: str = "iqn.2026-11.org.pvesan",
                 portals: Optional[list[str]] = None, admin_token: Optional[str] = None,
                 capacity_ttl: float = 2.0, secret_box: Optional[SecretBox] = None,
                 backend_factory: Callable[..., VolumeBackend] = make_backend):
        self.store = store
        # CHAP secrets are sealed with it in the database (a throw-away key unless one is given:
        # pvesan-service passes the key of its secret_key_file)
        self.box = secret_box or SecretBox.generate()
        self.target = target
        self.iqn_prefix = iqn_prefix
        self.portals = list(portals or ["127.0.0.1:3260"])
        self._admin_hash = token_hash(admin_token) if admin_token else None
        self.capacity_ttl = capacity_ttl
        self._backend_factory = backend_factory
        self._backends: dict[str, VolumeBackend] = {}
        self._pools: Optional[list[dict]] = None  # cached pool rows, dropped on pool changes
        self._capacity: dict[str, tuple[float, dict]] = {}
        self._usage: dict[str, tuple[float, dict]] = {}
        self.locks = KeyedLocks()
        self._tlock = threading.Lock()  # target drivers keep per-daemon state: one call at a time
        self._glock = threading.Lock()
        self.target_up = True
        self._auth_cache: dict[str, tuple[float, Principal]] = {}
        self._committer = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="pvesan-commit")
        self.metrics = Metrics(self)
        self.instance_id = self._prepare_meta()
        self.upgrade_legacy_rows()

    def _acl(self, initiators: list) -> list:
        """An initiator ACL as stored: without duplicates, just ["ALL"] when it lets anyone in, and
        refused (422) when the target driver could not enforce it."""
        acl = [ALL_INITIATORS] if ALL_INITIATORS in initiators else list(dict.fromkeys(initiators))
        problem = self.target.acl_problem(acl)
        if problem:
            raise Invalid(problem)
        return acl

    # ---------------------------------------------------------------- database identity and key
    def _prepare_meta(self) -> str:
        """Check that the database's secrets open with our key (a check value sealed with it is
        kept beside them) and return the database's instance id (made once: it identifies this
        storage across restarts and failovers)."""
        with self.store.tx() as t:
            for key, value in (("instance_id", secrets.token_hex(16)), ("key_check", self.box.key_check())):
                t.execute("INSERT INTO service_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))
            meta = {r["key"]: r["value"] for r in t.execute("SELECT key, value FROM service_meta").all()}
        try:
            self.box.verify(meta["key_check"])
        except SecretBoxError as exc:
            raise StoreError("the database's secrets were sealed with another key: %s" % exc) from None
        return meta["instance_id"]

    def upgrade_legacy_rows(self) -> None:
        """Bring rows of releases before schema 2 up to date (once; cheap when there is nothing):
        store the IQNs they were exported under (they never change), and move plaintext CHAP
        credentials into sealed accounts.  A CHAP name that several tenants shared (the takeover
        this schema prevents) stays with the tenant that used it first; the others get generated
        credentials, and a warning says which volumes changed."""
        with self.store.tx() as t:
            t.execute("UPDATE volumes SET iqn = ? || (SELECT replace(name, '_', '-') FROM tenants WHERE tenants.id = volumes.tenant_id) "
                      "|| '.' || id WHERE iqn IS NULL", (self.iqn_prefix + ":",))
            tenants = t.execute("SELECT id, name, chap FROM tenants WHERE chap IS NOT NULL ORDER BY created_at, id").all()
            volumes = t.execute("SELECT v.id, v.name, v.tenant_id, v.chap, t.name AS tenant FROM volumes v JOIN tenants t "
                                "ON t.id = v.tenant_id WHERE v.chap IS NOT NULL ORDER BY v.created_at, v.id").all()
            for kind, row in [("tenant", r) for r in tenants] + [("volume", r) for r in volumes]:
                old = _unj(row["chap"])
                mutual = old.get("mutual") or {}
                cred = Chap(old["user"], old["password"], mutual.get("user"), mutual.get("password"))
                try:
                    chaps.validate(cred)
                    chaps.claim(t, self.box, row["tenant_id"] if kind == "volume" else row["id"], cred)
                except (Conflict, Invalid) as exc:
                    cred = chaps.resolve({"mutual": {}} if cred.mutual_user else {})
                    chaps.claim(t, self.box, row["tenant_id"] if kind == "volume" else row["id"], cred)
                    log.warning("%s %s: its CHAP credentials could not be kept (%s); it got generated ones: "
                                "update the initiators", kind, row["name"] if kind == "tenant" else "%s/%s" % (row["tenant"], row["name"]),
                                exc.message)
                if kind == "tenant":
                    t.execute("UPDATE tenants SET chap = NULL, chap_user = ?, chap_mutual_user = ? WHERE id = ?",
                              (cred.user, cred.mutual_user, row["id"]))
                else:
                    t.execute("UPDATE volumes SET chap = NULL, chap_user = ?, chap_mutual_user = ? WHERE id = ?",
                              (cred.user, cred.mutual_user, row["id"]))
            if tenants:
                t.execute("UPDATE volumes SET chap_user = (SELECT chap_user FROM tenants WHERE tenants.id = volumes.tenant_id), "
                          "chap_mutual_user = (SELECT chap_mutual_user FROM tenants WHERE tenants.id = volumes.tenant_id) "
                          "WHERE chap_source = 'tenant'")

    # ---------------------------------------------------------------- auth / principals
    def authenticate(self, token: Optional[str]) -> Principal:
        if not token:
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        if self._admin_hash and hmac.compare_digest(token_hash(token), self._admin_hash):
            return Principal(admin=True)
        digest = token_hash(token)
        hit = self._auth_cache.get(digest)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        parts = token.split("_")
        if len(parts) == 3 and token.startswith(TOKEN_PREFIX):
            with self.store.tx() as t:
                row = t.execute("SELECT k.*, t.name AS tenant FROM tokens k LEFT JOIN tenants t ON t.id = k.tenant_id "
                                "WHERE k.id = ?", (parts[1],)).one()
            if row and hmac.compare_digest(digest, row["hash"]):
                if row["tenant_id"] is None:
                    p = Principal(admin=True, readonly=bool(row["readonly"]), token_id=row["id"])
                else:
                    p = Principal(admin=False, tenant_id=row["tenant_id"], tenant=row["tenant"],
                                  readonly=bool(row["readonly"]), token_id=row["id"])
                # valid tokens are remembered briefly (revocation here clears it at once; other
                # instances sharing a PostgreSQL database see it within AUTH_CACHE_TTL)
                if len(self._auth_cache) > 10000:
                    self._auth_cache.clear()
                self._auth_cache[digest] = (time.monotonic() + AUTH_CACHE_TTL, p)
                return p
        raise Unauthorized("invalid or revoked token")

    @staticmethod
    def require_admin(p: Principal, write: bool = True) -> None:
        if not p.admin:
            raise Forbidden("this operation needs an admin token")
        if write and p.readonly:
            raise Forbidden("read-only token")

    @staticmethod
    def require_write(p: Principal) -> None:
        if p.readonly:
            raise Forbidden("read-only token: this operation changes state")

    def scope(self, p: Principal, tenant: Optional[str]) -> dict:
        """The tenant a volume operation acts on: the token's own, or ``tenant`` for admins."""
        if not p.admin:
            if tenant is not None and tenant != p.tenant:
                raise NotFound("tenant %r not found" % tenant)
            return {"id": p.tenant_id, "name": p.tenant}
        if tenant is None:
            raise Invalid("admin tokens must name the tenant (query parameter tenant=...)")
        return self._tenant_row(tenant)

    # ---------------------------------------------------------------- tenants
    _TENANT_SELECT = ("SELECT t.*, ca.secret AS chap_secret, cm.secret AS chap_mutual_secret FROM tenants t "
                      "LEFT JOIN chap_accounts ca ON ca.username = t.chap_user "
                      "LEFT JOIN chap_accounts cm ON cm.username = t.chap_mutual_user ")

    def _tenant_row(self, name: str) -> dict:
        with self.store.tx() as t:
            row = t.execute(self._TENANT_SELECT + "WHERE t.name = ?", (name,)).one()
        if not row:
            raise NotFound("tenant %r not found" % name)
        return row

    def _tenant_chap(self, row: dict) -> Optional[Chap]:
        return chaps.opened(self.box, row["chap_user"], row["chap_secret"], row["chap_mutual_user"], row["chap_mutual_secret"])

    def _tenant_out(self, row: dict) -> dict:
        return {"name": row["name"], "chap": chaps.out(self._tenant_chap(row)),
                "initiators": _unj(row["initiators"], []), "quota_bytes": row["quota_bytes"], "created_at": row["created_at"]}

    def create_tenant(self, name: str, chap: Optional[Mapping] = chaps.GENERATE, initiators: Optional[list] = None,
                      quota_bytes: Optional[int] = None) -> dict:
        """A new tenant.  Secure by default: generated CHAP credentials unless ``chap`` is None,
        and no initiator may log in until ``initiators`` names them (``["ALL"]``: any)."""
        with self.metrics.measure("tenant_create"):
            check_name(name, "tenant name")
            cred = None if chap is None else chaps.resolve(chap)
            tid = "t-" + secrets.token_hex(8)
            try:
                with self.store.tx() as t:
                    t.execute("INSERT INTO tenants (id, name, initiators, quota_bytes, created_at) VALUES (?,?,?,?,?)",
                              (tid, name, _j(self._acl(initiators or [])), quota_bytes, now()))
                    if cred:
                        chaps.claim(t, self.box, tid, cred)
                        t.execute("UPDATE tenants SET chap_user = ?, chap_mutual_user = ? WHERE id = ?",
                                  (cred.user, cred.mutual_user, tid))
            except UniqueViolation:
                raise Conflict("tenant %r already exists" % name) from None
            return self.get_tenant(name)

    def list_tenants(self) -> list[dict]:
        with self.store.tx() as t:
            rows = t.execute(self._TENANT_SELECT + "ORDER BY t.name").all()
        return [self._tenant_out(r) for r in rows]

    def get_tenant(self, name: str) -> dict:
        return self._tenant_out(self._tenant_row(name))

    def update_tenant(self, name: str, changes: dict) -> dict:
        """Change CHAP, initiators or quota; re-exports the volumes that inherit them.  ``chap``:
        None removes it, a dict sets it (``{}``: a new generated secret for the same user)."""
        with self.metrics.measure("tenant_update"):
            row = self._tenant_row(name)
            sets, params, touched = [], [], set()
            if "initiators" in changes:
                sets.append("initiators = ?")
                params.append(_j(self._acl(changes["initiators"] or [])))
            if "quota_bytes" in changes:
                sets.append("quota_bytes = ?")
                params.append(changes["quota_bytes"])
            with self.store.tx() as t:
                if sets:
                    t.execute("UPDATE tenants SET %s WHERE id = ?" % ", ".join(sets), (*params, row["id"]))
                if "chap" in changes:
                    old = self._tenant_chap(row)
                    cred = None if changes["chap"] is None else chaps.resolve(changes["chap"], old)
                    if cred:
                        touched.update(chaps.claim(t, self.box, row["id"], cred, rotate=True))
                    users = (cred.user, cred.mutual_user) if cred else (None, None)
                    t.execute("UPDATE tenants SET chap_user = ?, chap_mutual_user = ? WHERE id = ?", (*users, row["id"]))
                    # volumes on tenant CHAP follow it; volumes without CHAP gain it
                    t.execute("UPDATE volumes SET chap_source = ?, chap_user = ?, chap_mutual_user = ? "
                              "WHERE tenant_id = ? AND chap_source IN ('tenant', 'none')",
                              ("tenant" if cred else "none", *users, row["id"]))
                    if old:
                        chaps.release(t, (old.user, old.mutual_user))
                vols = t.execute("SELECT id FROM volumes WHERE tenant_id = ? AND state = 'ready' AND "
                                 "(chap_source = 'tenant' OR chap_source = 'none' OR initiators IS NULL)",
                                 (row["id"],)).all()
                vols += self._volumes_using(t, touched)
            if "initiators" in changes or "chap" in changes:
                self._reexport(v["id"] for v in vols)
            return self.get_tenant(name)

    @staticmethod
    def _volumes_using(t, users) -> list[dict]:
        """Ready volumes whose credentials include one of ``users`` (their secret was rotated)."""
        out = []
        for user in users:
            out += t.execute("SELECT id FROM volumes WHERE state = 'ready' AND (chap_user = ? OR chap_mutual_user = ?)",
                             (user, user)).all()
        return out

    def _reexport(self, vids) -> None:
        for vid in dict.fromkeys(vids):
            with self.locks.hold(vid):
                vol = self._volume_by_id(vid)
                if vol and vol["state"] == "ready":
                    self._export(vol)

    def delete_tenant(self, name: str) -> None:
        with self.metrics.measure("tenant_delete"):
            row = self._tenant_row(name)
            with self.store.tx() as t:
                n = t.execute("SELECT COUNT(*) AS n FROM volumes WHERE tenant_id = ?", (row["id"],)).one()["n"]
                if n:
                    raise Conflict("tenant %r still has %d volume(s): delete them first" % (name, n))
                t.execute("DELETE FROM tokens WHERE tenant_id = ?", (row["id"],))
                t.execute("UPDATE tenants SET chap_user = NULL, chap_mutual_user = NULL WHERE id = ?", (row["id"],))
                t.execute("DELETE FROM chap_accounts WHERE tenant_id = ?", (row["id"],))
                t.execute("DELETE FROM tenants WHERE id = ?", (row["id"],))
            self._auth_cache.clear()

    # ---------------------------------------------------------------- tokens
    def create_token(self, p: Principal, name: str, tenant: Optional[str], readonly: bool = False) -> dict:
        """A new token; its secret is returned once and only its sha256 is stored."""
        with self.metrics.measure("token_create"):
            self.require_write(p)
            check_name(name, "token name")
            if p.admin:
                tenant_row = self._tenant_row(tenant) if tenant else None
            else:
                tenant_row = self.scope(p, tenant)
            tid = secrets.token_hex(6)
            secret = TOKEN_PREFIX + tid + "_" + secrets.token_urlsafe(32).replace("_", "-")
            row = {"id": tid, "tenant_id": tenant_row["id"] if tenant_row else None, "name": name,
                   "readonly": 1 if readonly else 0, "created_at": now()}
            with self.store.tx() as t:
                t.execute("INSERT INTO tokens (id, tenant_id, name, hash, readonly, created_at) VALUES (?,?,?,?,?,?)",
                          (tid, row["tenant_id"], name, token_hash(secret), row["readonly"], row["created_at"]))
            out = self._token_out(row, tenant_row["name"] if tenant_row else None)
            out["token"] = secret
            return out

    @staticmethod
    def _token_out(row: dict, tenant: Optional[str]) -> dict:
        return {"id": row["id"], "name": row["name"], "tenant": tenant, "readonly": bool(row["readonly"]),
                "created_at": row["created_at"]}

    def list_tokens(self, p: Principal, tenant: Optional[str] = None) -> list[dict]:
        sql = "SELECT k.*, t.name AS tenant FROM tokens k LEFT JOIN tenants t ON t.id = k.tenant_id"
        params: tuple = ()
        if not p.admin:
            sql += " WHERE k.tenant_id = ?"
            params = (self.scope(p, tenant)["id"],)
        elif tenant is not None:
            sql += " WHERE k.tenant_id = ?"
            params = (self._tenant_row(tenant)["id"],)
        with self.store.tx() as t:
            rows = t.execute(sql + " ORDER BY k.created_at, k.id", params).all()
        return [self._token_out(r, r["tenant"]) for r in rows]

    def revoke_token(self, p: Principal, token_id: str) -> None:
        with self.metrics.measure("token_revoke"):
            self.require_write(p)
            with self.store.tx() as t:
                row = t.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).one()
                if not row or (not p.admin and row["tenant_id"] != p.tenant_id):
                    raise NotFound("token %r not found" % token_id)
                t.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
            self._auth_cache.clear()

    # ---------------------------------------------------------------- pools
    def _pool_rows(self) -> list[dict]:
        pools = self._pools
        if pools is None:
            with self.store.tx() as t:
                pools = t.execute("SELECT * FROM pools ORDER BY name").all()
            for p in pools:
                p["tags"] = _unj(p["tags"], [])
                p["options"] = _unj(p["options"], {})
            self._pools = pools
        return pools

    def _pool(self, name: str) -> dict:
        for p in self._pool_rows():
            if p["name"] == name:
                return p
        raise NotFound("pool %r not found" % name)

    def _pool_by_id(self, pool_id: str) -> dict:
        for p in self._pool_rows():
            if p["id"] == pool_id:
                return p
        self._pools = None  # created by another instance: reload once
        for p in self._pool_rows():
            if p["id"] == pool_id:
                return p
        raise NotFound("pool %s not found" % pool_id)

    def backend(self, pool: dict) -> VolumeBackend:
        b = self._backends.get(pool["id"])
        if b is None:
            with self._glock:
                b = self._backends.get(pool["id"])
                if b is None:
                    b = self._make_backend(pool["kind"], pool["options"])
                    self._backends[pool["id"]] = b
        return b

    def _make_backend(self, kind: str, options: dict) -> VolumeBackend:
        try:
            return self._backend_factory(kind, **options)
        except TypeError as exc:
            raise Invalid("invalid options for a %s pool: %s" % (kind, exc)) from None

    def _capacity_of(self, pool: dict) -> dict:
        hit = self._capacity.get(pool["id"])
        t0 = time.monotonic()
        if hit and hit[0] > t0:
            return hit[1]
        try:
            c = self.backend(pool).capacity()
            cap = {"total": c.total, "used": c.used, "available": c.available, "error": None}
        except Exception as exc:  # a broken pool must not break /status for the others
            cap = {"total": 0, "used": 0, "available": 0, "error": str(exc)}
        self._capacity[pool["id"]] = (t0 + self.capacity_ttl, cap)
        return cap

    def _pool_out(self, pool: dict) -> dict:
        cap = self._capacity_of(pool)
        return {"name": pool["name"], "kind": pool["kind"], "tags": pool["tags"], "options": pool["options"],
                "total": cap["total"], "used": cap["used"], "available": cap["available"], "error": cap["error"],
                "created_at": pool["created_at"]}

    def create_pool(self, name: str, kind: str, options: dict, tags: list[str], replace: bool = False) -> dict:
        """Register a pool after checking the backend can use it.  ``replace`` (config file pools)
        updates options/tags of an existing pool of the same kind."""
        with self.metrics.measure("pool_create"):
            check_name(name, "pool name")
            backend = self._make_backend(kind, options)
            backend.check()
            try:
                with self.store.tx() as t:
                    old = t.execute("SELECT * FROM pools WHERE name = ?", (name,)).one()
                    if old and not replace:
                        raise Conflict("pool %r already exists" % name)
                    if old and old["kind"] != kind:
                        raise Conflict("pool %r exists with kind %s, not %s" % (name, old["kind"], kind))
                    if old:
                        t.execute("UPDATE pools SET options = ?, tags = ? WHERE id = ?", (_j(options), _j(tags), old["id"]))
                        pid = old["id"]
                    else:
                        pid = "p-" + secrets.token_hex(8)
                        t.execute("INSERT INTO pools (id, name, kind, options, tags, created_at) VALUES (?,?,?,?,?,?)",
                                  (pid, name, kind, _j(options), _j(tags), now()))
            except UniqueViolation:
                raise Conflict("pool %r already exists" % name) from None
            self._backends[pid] = backend
            self._pools = None
            return self.get_pool(name)

    def list_pools(self) -> list[dict]:
        return [self._pool_out(p) for p in self._pool_rows()]

    def get_pool(self, name: str) -> dict:
        return self._pool_out(self._pool(name))

    def update_pool(self, name: str, tags: list[str]) -> dict:
        pool = self._pool(name)
        with self.store.tx() as t:
            t.execute("UPDATE pools SET tags = ? WHERE id = ?", (_j(tags), pool["id"]))
        self._pools = None
        return self.get_pool(name)

    def delete_pool(self, name: str) -> None:
        with self.metrics.measure("pool_delete"):
            pool = self._pool(name)
            with self.store.tx() as t:
                n = t.execute("SELECT COUNT(*) AS n FROM volumes WHERE pool_id = ?", (pool["id"],)).one()["n"]
                if n:
                    raise Conflict("pool %r still holds %d volume(s)" % (name, n))
                t.execute("DELETE FROM pools WHERE id = ?", (pool["id"],))
            self._backends.pop(pool["id"], None)
            self._pools = None

    def pool_capacities(self) -> list[dict]:
        return [dict(name=p["name"], **self._capacity_of(p)) for p in self._pool_rows()]

    # ---------------------------------------------------------------- service types
    @staticmethod
    def _st_out(row: dict) -> dict:
        return {"name": row["name"], "description": row["description"], "pool_tags": _unj(row["pool_tags"], []),
                "block_size": row["block_size"], "thin": bool(row["thin"]), "chap": bool(row["chap"]),
                "default": bool(row["is_default"]), "created_at": row["created_at"]}

    def create_service_type(self, name: str, description: str = "", pool_tags: Optional[list] = None,
                            block_size: int = 512, thin: bool = True, chap: bool = False, default: bool = False,
                            replace: bool = False) -> dict:
        with self.metrics.measure("service_type_create"):
            check_name(name, "service type name")
            if block_size not in (512, 4096):
                raise Invalid("block_size must be 512 or 4096")
            vals = (description, _j(pool_tags or []), block_size, 1 if thin else 0, 1 if chap else 0, 1 if default else 0)
            try:
                with self.store.tx() as t:
                    old = t.execute("SELECT id FROM service_types WHERE name = ?", (name,)).one()
                    if old and not replace:
                        raise Conflict("service type %r already exists" % name)
                    if default:
                        t.execute("UPDATE service_types SET is_default = 0")
                    if old:
                        t.execute("UPDATE service_types SET description = ?, pool_tags = ?, block_size = ?, thin = ?, chap = ?, "
                                  "is_default = ? WHERE id = ?", (*vals, old["id"]))
                    else:
                        t.execute("INSERT INTO service_types (id, name, description, pool_tags, block_size, thin, chap, "
                                  "is_default, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                                  ("st-" + secrets.token_hex(8), name, *vals, now()))
            except UniqueViolation:
                raise Conflict("service type %r already exists" % name) from None
            return self.get_service_type(name)

    def list_service_types(self) -> list[dict]:
        with self.store.tx() as t:
            return [self._st_out(r) for r in t.execute("SELECT * FROM service_types ORDER BY name").all()]

    def get_service_type(self, name: str) -> dict:
        with self.store.tx() as t:
            row = t.execute("SELECT * FROM service_types WHERE name = ?", (name,)).one()
        if not row:
            raise NotFound("service type %r not found" % name)
        return self._st_out(row)

    def delete_service_type(self, name: str) -> None:
        self.get_service_type(name)
        with self.store.tx() as t:
            t.execute("DELETE FROM service_types WHERE name = ?", (name,))

    def _resolve_service_type(self, name: Optional[str]) -> dict:
        if name:
            return self.get_service_type(name)
        with self.store.tx() as t:
            row = t.execute("SELECT * FROM service_types WHERE is_default = 1").one()
        if row:
            return self._st_out(row)
        return {"name": None, "pool_tags": [], "block_size": 512, "thin": True, "chap": False}

    def _select_pools(self, st: dict, include: Optional[list], exclude: Optional[list]) -> list[dict]:
        need = set(st["pool_tags"]) | set(include or [])
        reject = set(exclude or [])
        return [p for p in self._pool_rows() if need <= set(p["tags"]) and not reject & set(p["tags"])]

    def _pick_pool(self, st: dict, include, exclude) -> dict:
        pools = self._select_pools(st, include, exclude)
        if not pools:
            raise Conflict("no pool matches service type %s, include %s, exclude %s: check pool tags"
                           % (st["name"] or "(default)", sorted(include or []), sorted(exclude or [])))
        # most free space first; a pool whose capacity cannot be read is the last resort
        return max(pools, key=lambda p: self._capacity_of(p)["available"])

    # ---------------------------------------------------------------- volumes: helpers
    def _iqn(self, vid: str) -> str:
        # the volume id makes it unique and says nothing about the tenant (discovery shows IQNs);
        # stored with the volume: IQNs of older releases (prefix:tenant.id) never change
        return "%s:%s" % (self.iqn_prefix, vid)

    _VOL_SELECT = ("SELECT v.*, t.name AS tenant, t.initiators AS tenant_initiators, "
                   "ca.secret AS chap_secret, cm.secret AS chap_mutual_secret, "
                   "p.name AS parent, s.name AS parent_snapshot FROM volumes v JOIN tenants t ON t.id = v.tenant_id "
                   "LEFT JOIN chap_accounts ca ON ca.username = v.chap_user "
                   "LEFT JOIN chap_accounts cm ON cm.username = v.chap_mutual_user "
                   "LEFT JOIN volumes p ON p.id = v.parent_id LEFT JOIN snapshots s ON s.id = v.parent_snapshot_id ")

    def _volume_by_id(self, vid: str) -> Optional[dict]:
        with self.store.tx() as t:
            return t.execute(self._VOL_SELECT + "WHERE v.id = ?", (vid,)).one()

    def _volume(self, tenant: dict, name: str) -> dict:
        with self.store.tx() as t:
            row = t.execute(self._VOL_SELECT + "WHERE v.tenant_id = ? AND v.name = ?", (tenant["id"], name)).one()
        if not row or row["state"] == "deleting":
            raise NotFound("volume %r not found" % name)
        return row

    def _chap(self, vol: dict) -> Optional[Chap]:
        return chaps.opened(self.box, vol["chap_user"], vol["chap_secret"], vol["chap_mutual_user"], vol["chap_mutual_secret"])

    def _initiators(self, vol: dict) -> list[str]:
        own = _unj(vol["initiators"])
        return own if own is not None else _unj(vol["tenant_initiators"], [])

    def export_of(self, vol: dict) -> Export:
        return Export(iqn=vol["iqn"], lun=DATA_LUN, backing_path=vol["backing_path"],
                      serial=vol["id"][2:], chap=self._chap(vol), initiators=self._initiators(vol),
                      readonly=False, block_size=vol["block_size"])

    def _export(self, vol: dict) -> None:
        exp = self.export_of(vol)
        with self._tlock:
            self.target.export(exp)

    def _unexport(self, iqn: str) -> None:
        with self._tlock:
            try:
                self.target.unexport(iqn)
            except TargetNotRunning:
                pass  # a target daemon that is not running exports nothing

    def _allocated(self, vol: dict) -> Optional[int]:
        try:
            return self.backend(self._pool_by_id(vol["pool_id"])).allocated_bytes(vol["id"])
        except Exception:  # a pool that cannot tell (or is down) must not break a volume's show
            return None

    def _volume_out(self, vol: dict, allocated: bool = True) -> dict:
        """A volume as the API shows it.  ``allocated=False`` (lists) leaves out the pool query for
        the allocated bytes, one command per volume on zfs and lvmthin pools."""
        iqn = vol["iqn"]
        return {
            "id": vol["id"], "name": vol["name"], "tenant": vol["tenant"], "pool": self._pool_by_id(vol["pool_id"])["name"],
            "service_type": vol["service_type"], "size": vol["size"], "allocated": self._allocated(vol) if allocated else None,
            "thin": bool(vol["thin"]), "block_size": vol["block_size"], "vmid": vol["vmid"], "tags": _unj(vol["tags"], []),
            "state": vol["state"], "parent": vol["parent"], "parent_snapshot": vol["parent_snapshot"],
            "export": {
                "iqn": iqn, "lun": DATA_LUN, "portals": self.portals,
                "urls": ["iscsi://%s/%s/%d" % (portal, iqn, DATA_LUN) for portal in self.portals],
                "initiators": self._initiators(vol),
                "wwid": self.target.wwid(vol["id"][2:]),
                "chap": chaps.out(self._chap(vol)),
            },
            "created_at": vol["created_at"], "updated_at": vol["updated_at"],
        }

    def _invalidate_usage(self, tenant_id: str) -> None:
        self._usage.pop(tenant_id, None)

    # ---------------------------------------------------------------- volumes: create
    def create_volume(self, tenant: dict, name: str, size, service_type: Optional[str] = None,
                      query_include: Optional[list] = None, query_exclude: Optional[list] = None,
                      tags: Optional[list] = None, initiators: Optional[list] = None,
                      chap: Optional[dict] = None) -> tuple[dict, bool]:
        """Create and export a volume; returns (volume, created).  Repeating the same create
        returns the existing volume (created=False); a different one under the same name is a 409.
        CHAP: the request's own (``{}``: generated), else the tenant's, else generated when the
        service type asks for CHAP."""
        with self.metrics.measure("volume_create"):
            check_name(name, "volume name")
            size = align_size(parse_size(size))
            st = self._resolve_service_type(service_type)
            own = None if chap is None else chaps.resolve(chap)
            vid = "v-" + secrets.token_hex(8)
            with self.locks.hold(vid):
                while True:
                    existing = self._find_volume(tenant, name)
                    if existing is None:
                        pool = self._pick_pool(st, query_include, query_exclude)
                        tenant_row = self._tenant_row(tenant["name"])
                        if own is None and not tenant_row["chap_user"] and st["chap"]:
                            own = chaps.resolve(chaps.GENERATE)
                        if own:
                            source, users = "volume", (own.user, own.mutual_user)
                        elif tenant_row["chap_user"]:
                            source, users = "tenant", (tenant_row["chap_user"], tenant_row["chap_mutual_user"])
                        else:
                            source, users = "none", (None, None)
                        ts = now()
                        try:
                            with self.store.tx(durable=False) as t:
                                self._check_quota(t, tenant_row, size)
                                if own:
                                    chaps.claim(t, self.box, tenant["id"], own)
                                t.execute("INSERT INTO volumes (id, tenant_id, name, pool_id, service_type, size, thin, block_size, "
                                          "vmid, tags, chap_source, chap_user, chap_mutual_user, initiators, iqn, backing_path, "
                                          "state, created_at, updated_at) "
                                          "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'creating',?,?)",
                                          (vid, tenant["id"], name, pool["id"], st["name"], size, 1 if st["thin"] else 0,
                                           st["block_size"], vmid_of(name), _j(tags or []), source, *users,
                                           None if initiators is None else _j(self._acl(initiators)), self._iqn(vid),
                                           self.backend(pool).path(vid), ts, ts))
                        except UniqueViolation:
                            continue  # a concurrent create of the same name won: look again
                        break
                    if existing["state"] == "creating":
                        with self.locks.hold(existing["id"]):  # wait for the other create to finish
                            pass
                        existing = self._find_volume(tenant, name)
                        if existing is None or existing["state"] == "creating":
                            continue
                    if existing["state"] == "deleting":
                        # a delete (or a failed create) that could not finish, e.g. while the target
                        # daemon was down: finish it now, then create anew
                        with self.locks.hold(existing["id"]):
                            fresh = self._volume_by_id(existing["id"])
                            if fresh and fresh["state"] == "deleting":
                                self.delete_row_and_storage(fresh)
                        continue
                    if existing["size"] != size or (service_type and existing["service_type"] != service_type) \
                            or existing["parent_id"] is not None:
                        raise Conflict("volume %r already exists with size %d, service type %s" %
                                       (name, existing["size"], existing["service_type"]))
                    return self._volume_out(existing), False
                self._invalidate_usage(tenant["id"])
                backend = self.backend(pool)
                return self._finish_create(vid, backend, lambda: backend.create(vid, size, bool(st["thin"]))), True

    def _find_volume(self, tenant: dict, name: str) -> Optional[dict]:
        with self.store.tx() as t:
            return t.execute(self._VOL_SELECT + "WHERE v.tenant_id = ? AND v.name = ?", (tenant["id"], name)).one()

    @staticmethod
    def _check_quota(t, tenant_row: dict, size: int) -> None:
        quota = tenant_row["quota_bytes"]
        if quota is None:
            return
        used = t.execute("SELECT COALESCE(SUM(size), 0) AS s FROM volumes WHERE tenant_id = ?", (tenant_row["id"],)).one()["s"]
        if int(used) + size > quota:
            raise Conflict("tenant quota exceeded: %d of %d bytes provisioned, %d more asked" % (int(used), quota, size))

    def _finish_create(self, vid: str, backend: VolumeBackend, make: Callable[[], str]) -> dict:
        """Phase 2 of a create/clone (the volume lock is held): backing volume, export, commit."""
        commit = None
        try:
            path = make()
            vol = self._volume_by_id(vid)
            vol["backing_path"] = path  # usually what backend.path() said at insert; the backend has the last word

            def ready():
                backend.flush(vid)  # the volume is on disk before the database says it is ready
                with self.store.tx() as t:
                    t.execute("UPDATE volumes SET state = 'ready', backing_path = ?, updated_at = ? WHERE id = ?",
                              (path, now(), vid))

            # The backing volume's flush and the durable 'ready' commit (two fsyncs) run while
            # the target exports: a crash in between leaves either a 'creating' volume, which the
            # reconciler removes, or a ready volume without export, which it exports at start-up;
            # the caller had no answer yet and a retried create returns the volume.
            commit = self._committer.submit(ready)
            self._export(vol)
            commit.result()
        except BaseException:
            if commit is not None:
                concurrent.futures.wait([commit])
            self.undo_create(vid)
            raise
        return self._volume_out(self._volume_by_id(vid))

    def undo_create(self, vid: str) -> None:
        """Remove a half-made volume as a delete does: the row is marked 'deleting' on disk before
        anything else (it may have been committed 'ready' meanwhile), so should a step fail the
        reconciler finishes the delete and never exports it; then export, backing volume, row.
        A target daemon that is not running holds no export: nothing to remove there."""
        vol = self._volume_by_id(vid)
        if vol is None:
            return
        try:
            self.delete_row_and_storage(vol)
        except Exception as exc:
            log.error("cleanup of half-created volume %s failed, the reconciler will finish it: %s", vid, exc)
        self._invalidate_usage(vol["tenant_id"])

    # ---------------------------------------------------------------- volumes: read
    @staticmethod
    def _list_filter(tenant: dict, prefix: Optional[str], vmid: Optional[int], tag: Optional[str]) -> tuple[str, list]:
        where = " WHERE v.tenant_id = ? AND v.state <> 'deleting'"
        params: list[Any] = [tenant["id"]]
        if prefix:
            where += " AND substr(v.name, 1, ?) = ?"
            params += [len(prefix), prefix]
        if vmid is not None:
            where += " AND v.vmid = ?"
            params.append(vmid)
        if tag:
            where += " AND v.tags LIKE ?"  # tags are a JSON list of strings without quotes or wildcards
            params.append('%' + json.dumps(tag) + '%')
        return where, params

    # one JSON object per row, built by the database (escaping included): no Python dict or
    # json.dumps per volume, so a list of 5,000 summaries is one query and one join of strings
    _SUMMARY_SQLITE = ("json_object('id', v.id, 'name', v.name, 'size', v.size, 'vmid', v.vmid, 'tags', json(v.tags), "
                       "'state', v.state, 'pool', pl.name, 'parent', p.name, 'parent_snapshot', s.name, "
                       "'iqn', v.iqn, 'created_at', v.created_at)")
    _SUMMARY_PG = ("json_build_object('id', v.id, 'name', v.name, 'size', v.size, 'vmid', v.vmid, 'tags', v.tags::json, "
                   "'state', v.state, 'pool', pl.name, 'parent', p.name, 'parent_snapshot', s.name, "
                   "'iqn', v.iqn, 'created_at', v.created_at)::text")

    def list_volumes_json(self, tenant: dict, prefix: Optional[str] = None, vmid: Optional[int] = None,
                          tag: Optional[str] = None) -> str:
        """The summary list of ``list_volumes`` as a JSON array (what the API sends as is)."""
        where, params = self._list_filter(tenant, prefix, vmid, tag)
        with self.store.tx() as t:
            rows = t.execute("SELECT " + (self._SUMMARY_PG if self.store.pg else self._SUMMARY_SQLITE) + " AS j "
                             "FROM volumes v LEFT JOIN pools pl ON pl.id = v.pool_id "
                             "LEFT JOIN volumes p ON p.id = v.parent_id LEFT JOIN snapshots s ON s.id = v.parent_snapshot_id"
                             + where + " ORDER BY v.name", params).rows()
        return "[" + ",".join([r["j"] for r in rows]) + "]"

    def list_volumes(self, tenant: dict, prefix: Optional[str] = None, vmid: Optional[int] = None,
                     tag: Optional[str] = None, detail: bool = False) -> list[dict]:
        """Volumes of a tenant, by name.  Summaries by default (what a storage listing needs;
        5,000 of them in well under 100 ms); ``detail`` gives full objects with the export."""
        where, params = self._list_filter(tenant, prefix, vmid, tag)
        if detail:
            with self.store.tx() as t:
                rows = t.execute(self._VOL_SELECT + where + " ORDER BY v.name", params).all()
            return [self._volume_out(r, allocated=False) for r in rows]
        with self.store.tx() as t:
            rows = t.execute("SELECT v.id, v.name, v.size, v.vmid, v.tags, v.state, v.pool_id, v.iqn, v.created_at, "
                             "p.name AS parent, s.name AS parent_snapshot FROM volumes v "
                             "LEFT JOIN volumes p ON p.id = v.parent_id LEFT JOIN snapshots s ON s.id = v.parent_snapshot_id"
                             + where + " ORDER BY v.name", params).rows()
        pools = {p["id"]: p["name"] for p in self._pool_rows()}
        return [{"id": r["id"], "name": r["name"], "size": r["size"], "vmid": r["vmid"],
                 "tags": [] if r["tags"] == "[]" else json.loads(r["tags"]), "state": r["state"],
                 "pool": pools.get(r["pool_id"]), "parent": r["parent"], "parent_snapshot": r["parent_snapshot"],
                 "iqn": r["iqn"], "created_at": r["created_at"]} for r in rows]

    def get_volume(self, tenant: dict, name: str) -> dict:
        return self._volume_out(self._volume(tenant, name))

    # ---------------------------------------------------------------- volumes: change
    @contextmanager
    def _locked(self, tenant: dict, name: str):
        """Hold the volume's lock and yield its fresh row (404 if it went away meanwhile)."""
        vol = self._volume(tenant, name)
        with self.locks.hold(vol["id"]):
            fresh = self._volume_by_id(vol["id"])
            if not fresh or fresh["state"] != "ready" or fresh["name"] != name:
                if fresh and fresh["state"] == "creating":
                    raise Conflict("volume %r is still being created" % name)
                raise NotFound("volume %r not found" % name)
            yield fresh

    def resize_volume(self, tenant: dict, name: str, size) -> dict:
        with self.metrics.measure("volume_resize"):
            new = align_size(parse_size(size))
            with self._locked(tenant, name) as vol:
                if new < vol["size"]:
                    raise Invalid("shrinking is refused: volume %r is %d bytes, asked %d" % (name, vol["size"], new))
                if new > vol["size"]:
                    tenant_row = self._tenant_row(tenant["name"])
                    with self.store.tx() as t:
                        self._check_quota(t, tenant_row, new - vol["size"])
                    self.backend(self._pool_by_id(vol["pool_id"])).resize(vol["id"], new)
                    with self.store.tx() as t:
                        t.execute("UPDATE volumes SET size = ?, updated_at = ? WHERE id = ?", (new, now(), vol["id"]))
                    with self._tlock:
                        self.target.refresh_size(vol["iqn"])
                    self._invalidate_usage(tenant["id"])
                return self._volume_out(self._volume_by_id(vol["id"]))

    def rename_volume(self, tenant: dict, name: str, new_name: str) -> dict:
        with self.metrics.measure("volume_rename"):
            check_name(new_name, "volume name")
            with self._locked(tenant, name) as vol:
                if new_name != name:
                    try:
                        with self.store.tx() as t:
                            t.execute("UPDATE volumes SET name = ?, vmid = ?, updated_at = ? WHERE id = ?",
                                      (new_name, vmid_of(new_name), now(), vol["id"]))
                    except UniqueViolation:
                        raise Conflict("volume %r already exists" % new_name) from None
                return self._volume_out(self._volume_by_id(vol["id"]))

    def update_volume(self, tenant: dict, name: str, changes: dict) -> dict:
        """Tags, initiator ACL, per-volume CHAP (``chap: null`` falls back to the tenant's; a new
        secret for the volume's own user is a rotation: every volume using that user follows)."""
        with self.metrics.measure("volume_update"):
            with self._locked(tenant, name) as vol:
                sets, params, touched = [], [], set()
                if "tags" in changes:
                    sets.append("tags = ?")
                    params.append(_j(changes["tags"] or []))
                if "initiators" in changes:
                    sets.append("initiators = ?")
                    params.append(None if changes["initiators"] is None else _j(self._acl(changes["initiators"])))
                tenant_row = self._tenant_row(tenant["name"]) if changes.get("chap", 0) is None else None
                with self.store.tx() as t:
                    if "chap" in changes:
                        if changes["chap"] is None:
                            source = "tenant" if tenant_row["chap_user"] else "none"
                            users = (tenant_row["chap_user"], tenant_row["chap_mutual_user"])
                        else:
                            current = self._chap(vol) if vol["chap_source"] == "volume" else None
                            cred = chaps.resolve(changes["chap"], current)
                            touched.update(chaps.claim(t, self.box, tenant["id"], cred, rotate=True))
                            source, users = "volume", (cred.user, cred.mutual_user)
                        sets += ["chap_source = ?", "chap_user = ?", "chap_mutual_user = ?"]
                        params += [source, *users]
                    if sets:
                        t.execute("UPDATE volumes SET %s, updated_at = ? WHERE id = ?" % ", ".join(sets),
                                  (*params, now(), vol["id"]))
                    if "chap" in changes:
                        chaps.release(t, (vol["chap_user"], vol["chap_mutual_user"]))
                        others = [v["id"] for v in self._volumes_using(t, touched) if v["id"] != vol["id"]]
                vol = self._volume_by_id(vol["id"])
                if "initiators" in changes or "chap" in changes:
                    self._export(vol)
            if "chap" in changes:
                self._reexport(others)
            return self._volume_out(vol)

    def delete_volume(self, tenant: dict, name: str, cascade: bool = False) -> None:
        with self.metrics.measure("volume_delete"):
            with self._locked(tenant, name) as vol:
                self._delete_locked(vol, cascade)
            self._invalidate_usage(tenant["id"])

    def _delete_locked(self, vol: dict, cascade: bool) -> None:
        with self.store.tx() as t:
            children = t.execute("SELECT id, name FROM volumes WHERE parent_id = ? ORDER BY name", (vol["id"],)).all()
        if children and not cascade:
            raise Conflict("volume %r has dependent clones (%s): delete them first or pass cascade=true"
                           % (vol["name"], ", ".join(c["name"] for c in children)))
        for child in children:
            with self.locks.hold(child["id"]):
                fresh = self._volume_by_id(child["id"])
                if fresh:
                    self._delete_locked(fresh, True)
        self.delete_row_and_storage(vol)

    def delete_row_and_storage(self, vol: dict) -> None:
        """Two-phase delete: mark 'deleting' (on disk before any data is destroyed), remove export
        and backing volume, drop the rows (not flushed on its own: should a power cut lose it, the
        row is still 'deleting' and the reconciler finishes the delete)."""
        def mark():
            with self.store.tx() as t:
                t.execute("UPDATE volumes SET state = 'deleting', updated_at = ? WHERE id = ?", (now(), vol["id"]))

        # The export goes while the mark is flushed: a power cut in between leaves a 'ready'
        # volume without export, which the reconciler exports again; data waits for the mark.
        marked = self._committer.submit(mark)
        try:
            self._unexport(vol["iqn"])
        finally:
            marked.result()
        self.backend(self._pool_by_id(vol["pool_id"])).delete(vol["id"])
        with self.store.tx(durable=False) as t:
            # clones of this volume (cascade already removed them) keep no dangling reference
            t.execute("UPDATE volumes SET parent_id = NULL, parent_snapshot_id = NULL WHERE parent_id = ?", (vol["id"],))
            t.execute("DELETE FROM snapshots WHERE volume_id = ?", (vol["id"],))
            t.execute("DELETE FROM volumes WHERE id = ?", (vol["id"],))
            chaps.release(t, (vol["chap_user"], vol["chap_mutual_user"]))

    # ---------------------------------------------------------------- snapshots
    @staticmethod
    def _snap_out(row: dict, volume: str) -> dict:
        return {"name": row["name"], "id": row["id"], "volume": volume, "state": row["state"], "created_at": row["created_at"]}

    def _snapshot(self, vol: dict, snap: str) -> dict:
        with self.store.tx() as t:
            row = t.execute("SELECT * FROM snapshots WHERE volume_id = ? AND name = ?", (vol["id"], snap)).one()
        if not row or row["state"] != "ready":
            raise NotFound("snapshot %r of volume %r not found" % (snap, vol["name"]))
        return row

    def create_snapshot(self, tenant: dict, name: str, snap: str) -> tuple[dict, bool]:
        with self.metrics.measure("snapshot_create"):
            check_snap_name(snap)
            with self._locked(tenant, name) as vol:
                return self._create_snapshot_locked(vol, snap)

    def _create_snapshot_locked(self, vol: dict, snap: str) -> tuple[dict, bool]:
        with self.store.tx() as t:
            old = t.execute("SELECT * FROM snapshots WHERE volume_id = ? AND name = ?", (vol["id"], snap)).one()
        if old and old["state"] == "ready":
            return self._snap_out(old, vol["name"]), False
        sid = old["id"] if old else "s-" + secrets.token_hex(8)
        if not old:
            with self.store.tx(durable=False) as t:
                t.execute("INSERT INTO snapshots (id, volume_id, name, state, created_at) VALUES (?,?,?,'creating',?)",
                          (sid, vol["id"], snap, now()))
        backend = self.backend(self._pool_by_id(vol["pool_id"]))
        try:
            backend.snapshot_create(vol["id"], sid)
        except BaseException:
            try:
                backend.snapshot_delete(vol["id"], sid)
                with self.store.tx() as t:
                    t.execute("DELETE FROM snapshots WHERE id = ?", (sid,))
            except Exception as exc:
                log.error("cleanup of snapshot %s failed, the reconciler will retry: %s", sid, exc)
            raise
        with self.store.tx() as t:
            t.execute("UPDATE snapshots SET state = 'ready' WHERE id = ?", (sid,))
            row = t.execute("SELECT * FROM snapshots WHERE id = ?", (sid,)).one()
        return self._snap_out(row, vol["name"]), True

    def list_snapshots(self, tenant: dict, name: str) -> list[dict]:
        vol = self._volume(tenant, name)
        with self.store.tx() as t:
            rows = t.execute("SELECT * FROM snapshots WHERE volume_id = ? AND state = 'ready' ORDER BY created_at, name",
                             (vol["id"],)).all()
        return [self._snap_out(r, name) for r in rows]

    def delete_snapshot(self, tenant: dict, name: str, snap: str, cascade: bool = False) -> None:
        with self.metrics.measure("snapshot_delete"):
            with self._locked(tenant, name) as vol:
                row = self._snapshot(vol, snap)
                with self.store.tx() as t:
                    clones = t.execute("SELECT id, name FROM volumes WHERE parent_snapshot_id = ? ORDER BY name", (row["id"],)).all()
                if clones and not cascade:
                    raise Conflict("snapshot %r has dependent clones (%s): delete them first or pass cascade=true"
                                   % (snap, ", ".join(c["name"] for c in clones)))
                for c in clones:
                    with self.locks.hold(c["id"]):
                        fresh = self._volume_by_id(c["id"])
                        if fresh:
                            self._delete_locked(fresh, True)
                self._invalidate_usage(tenant["id"])
                with self.store.tx() as t:
                    t.execute("UPDATE snapshots SET state = 'deleting' WHERE id = ?", (row["id"],))
                self.backend(self._pool_by_id(vol["pool_id"])).snapshot_delete(vol["id"], row["id"])
                with self.store.tx() as t:
                    t.execute("DELETE FROM snapshots WHERE id = ?", (row["id"],))

    def rollback_snapshot(self, tenant: dict, name: str, snap: str) -> dict:
        """Content back to the snapshot.  The export is taken down meanwhile so that no initiator
        (and no target cache) sees a half-rolled-back volume; initiators log in again after."""
        with self.metrics.measure("snapshot_rollback"):
            with self._locked(tenant, name) as vol:
                row = self._snapshot(vol, snap)
                self._unexport(vol["iqn"])
                try:
                    self.backend(self._pool_by_id(vol["pool_id"])).snapshot_rollback(vol["id"], row["id"])
                finally:
                    self._export(vol)
                return self._volume_out(vol)

    # ---------------------------------------------------------------- clones
    def clone_volume(self, tenant: dict, name: str, new_name: str, snapshot: Optional[str] = None,
                     tags: Optional[list] = None) -> tuple[dict, bool]:
        """A new exported volume from a snapshot of ``name`` (thin where the backend allows).
        Without ``snapshot`` the clone is made from the volume's implicit base snapshot, which
        suits Proxmox templates (base volumes never change after they become a template)."""
        with self.metrics.measure("volume_clone"):
            check_name(new_name, "volume name")
            if snapshot is not None:
                check_snap_name(snapshot)
            vid = "v-" + secrets.token_hex(8)
            with self._locked(tenant, name) as src:
                existing = self._find_volume(tenant, new_name)
                if existing:
                    snap_name = snapshot or BASE_SNAPSHOT
                    if existing["parent_id"] == src["id"] and existing["parent_snapshot"] == snap_name \
                            and existing["state"] == "ready":
                        return self._volume_out(existing), False
                    raise Conflict("volume %r already exists" % new_name)
                if snapshot is None:
                    snap_row = self._create_snapshot_locked(src, BASE_SNAPSHOT)[0]
                else:
                    snap_row = self._snapshot(src, snapshot)
                with self.locks.hold(vid):
                    ts = now()
                    tenant_row = self._tenant_row(tenant["name"])
                    try:
                        with self.store.tx(durable=False) as t:
                            self._check_quota(t, tenant_row, src["size"])
                            t.execute("INSERT INTO volumes (id, tenant_id, name, pool_id, service_type, size, thin, block_size, "
                                      "vmid, tags, chap_source, chap_user, chap_mutual_user, initiators, iqn, parent_id, "
                                      "parent_snapshot_id, state, created_at, updated_at) "
                                      "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'creating',?,?)",
                                      (vid, tenant["id"], new_name, src["pool_id"], src["service_type"], src["size"],
                                       src["thin"], src["block_size"], vmid_of(new_name),
                                       _j(tags if tags is not None else _unj(src["tags"], [])),
                                       # the clone uses the origin's credentials (accounts of the same tenant)
                                       src["chap_source"], src["chap_user"], src["chap_mutual_user"],
                                       src["initiators"], self._iqn(vid), src["id"], snap_row["id"], ts, ts))
                    except UniqueViolation:
                        raise Conflict("volume %r already exists" % new_name) from None
                    self._invalidate_usage(tenant["id"])
                    backend = self.backend(self._pool_by_id(src["pool_id"]))
                    return self._finish_create(vid, backend, lambda: backend.clone(src["id"], snap_row["id"], vid)), True

    # ---------------------------------------------------------------- status
    def tenant_usage(self, tenant_id: str) -> dict:
        hit = self._usage.get(tenant_id)
        t0 = time.monotonic()
        if hit and hit[0] > t0:
            return hit[1]
        with self.store.tx() as t:
            row = t.execute("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS s FROM volumes WHERE tenant_id = ?",
                            (tenant_id,)).one()
            q = t.execute("SELECT quota_bytes FROM tenants WHERE id = ?", (tenant_id,)).one()
        usage = {"volumes": int(row["n"]), "provisioned_bytes": int(row["s"]), "quota_bytes": q["quota_bytes"] if q else None}
        self._usage[tenant_id] = (t0 + self.capacity_ttl, usage)
        return usage

    def usage_by_tenant(self) -> list[dict]:
        with self.store.tx() as t:
            rows = t.execute("SELECT t.name AS tenant, COUNT(v.id) AS n, COALESCE(SUM(v.size), 0) AS s FROM tenants t "
                             "LEFT JOIN volumes v ON v.tenant_id = t.id GROUP BY t.name ORDER BY t.name").all()
        return [{"tenant": r["tenant"], "volumes": int(r["n"]), "provisioned_bytes": int(r["s"])} for r in rows]

    def status(self, p: Principal, tenant: Optional[str] = None, service_type: Optional[str] = None,
               query_include: Optional[list] = None, query_exclude: Optional[list] = None) -> dict:
        """Real capacity of every pool, the sum over the pools a Proxmox storage would allocate
        from (service type + include/exclude tags), and the tenant's own usage."""
        st = self._resolve_service_type(service_type)
        selected = {p_["id"] for p_ in self._select_pools(st, query_include, query_exclude)}
        pools, total, used, avail = [], 0, 0, 0
        for pool in self._pool_rows():
            cap = self._capacity_of(pool)
            pools.append({"name": pool["name"], "kind": pool["kind"], "tags": pool["tags"], "total": cap["total"],
                          "used": cap["used"], "available": cap["available"], "error": cap["error"]})
            if pool["id"] in selected and not cap["error"]:
                total += cap["total"]
                used += cap["used"]
                avail += cap["available"]
        out = {"pools": pools, "total": total, "used": used, "available": avail, "active": bool(selected),
               "target_up": self.target_up, "instance_id": self.instance_id, "tenant": None}
        if p.admin and tenant is None:
            return out
        scope = self.scope(p, tenant)
        out["tenant"] = dict(name=scope["name"], **self.tenant_usage(scope["id"]))
        quota = out["tenant"]["quota_bytes"]
        if quota is not None:  # a quota caps what this tenant can still allocate
            out["total"] = min(total, quota)
            out["available"] = max(0, min(avail, quota - out["tenant"]["provisioned_bytes"]))
            out["used"] = min(out["total"], out["tenant"]["provisioned_bytes"])
        return out

    def healthy(self) -> dict:
        try:
            version = self.store.version()
            db = True
        except Exception:
            version, db = None, False
        return {"status": "ok" if db and self.target_up else "degraded", "database": db, "schema_version": version,
                "target_up": self.target_up}
