"""Pools (backing stores on the host) and service types (provisioning templates), and the choice
of a pool for a new volume."""
from __future__ import annotations

import secrets
import threading
import time
from typing import Callable, Optional

from .. import db
from ..backends import VolumeBackend, make_backend
from ..errors import Conflict, Invalid, NotFound
from ..names import check_name

NO_SERVICE_TYPE = {"name": None, "pool_tags": [], "block_size": 512, "thin": True, "chap": False}


class Pools:
    """Pool rows (cached: every volume operation needs its pool), their backends and capacity."""

    def __init__(self, store: db.Store, metrics, capacity_ttl: float,
                 backend_factory: Callable[..., VolumeBackend] = make_backend):
        self.store = store
        self.metrics = metrics
        self.capacity_ttl = capacity_ttl
        self._backend_factory = backend_factory
        self._backends: dict[str, VolumeBackend] = {}
        self._rows: Optional[list[dict]] = None  # dropped on pool changes
        self._capacity: dict[str, tuple[float, dict]] = {}
        self._lock = threading.Lock()

    def rows(self) -> list[dict]:
        rows = self._rows
        if rows is None:
            with self.store.tx() as t:
                rows = self._rows = db.pools.all_(t)
        return rows

    def by_name(self, name: str) -> dict:
        for p in self.rows():
            if p["name"] == name:
                return p
        raise NotFound("pool %r not found" % name)

    def by_id(self, pool_id: str) -> dict:
        for p in self.rows():
            if p["id"] == pool_id:
                return p
        self._rows = None  # created by another instance: reload once
        for p in self.rows():
            if p["id"] == pool_id:
                return p
        raise NotFound("pool %s not found" % pool_id)

    def backend(self, pool: dict) -> VolumeBackend:
        b = self._backends.get(pool["id"])
        if b is None:
            with self._lock:
                b = self._backends.get(pool["id"])
                if b is None:
                    b = self._backends[pool["id"]] = self._make_backend(pool["kind"], pool["options"])
        return b

    def backend_of(self, vol: dict) -> VolumeBackend:
        return self.backend(self.by_id(vol["pool_id"]))

    def _make_backend(self, kind: str, options: dict) -> VolumeBackend:
        try:
            return self._backend_factory(kind, **options)
        except TypeError as exc:
            raise Invalid("invalid options for a %s pool: %s" % (kind, exc)) from None

    def capacity(self, pool: dict) -> dict:
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

    def capacities(self) -> list[dict]:
        return [dict(name=p["name"], **self.capacity(p)) for p in self.rows()]

    def _out(self, pool: dict) -> dict:
        cap = self.capacity(pool)
        return {"name": pool["name"], "kind": pool["kind"], "tags": pool["tags"], "options": pool["options"],
                "total": cap["total"], "used": cap["used"], "available": cap["available"], "error": cap["error"],
                "created_at": pool["created_at"]}

    def create(self, name: str, kind: str, options: dict, tags: list[str], replace: bool = False) -> dict:
        """Register a pool after checking the backend can use it.  ``replace`` (config file pools)
        updates options/tags of an existing pool of the same kind."""
        with self.metrics.measure("pool_create"):
            check_name(name, "pool name")
            backend = self._make_backend(kind, options)
            backend.check()
            try:
                with self.store.tx() as t:
                    old = db.pools.by_name(t, name)
                    if old and not replace:
                        raise Conflict("pool %r already exists" % name)
                    if old and old["kind"] != kind:
                        raise Conflict("pool %r exists with kind %s, not %s" % (name, old["kind"], kind))
                    if old:
                        db.pools.update(t, old["id"], db.to_json(tags), db.to_json(options))
                        pool_id = old["id"]
                    else:
                        pool_id = "p-" + secrets.token_hex(8)
                        db.pools.insert(t, pool_id, name, kind, db.to_json(options), db.to_json(tags), db.now())
            except db.UniqueViolation:
                raise Conflict("pool %r already exists" % name) from None
            self._backends[pool_id] = backend
            self._rows = None
            return self.get(name)

    def list_(self) -> list[dict]:
        return [self._out(p) for p in self.rows()]

    def get(self, name: str) -> dict:
        return self._out(self.by_name(name))

    def update(self, name: str, tags: list[str]) -> dict:
        pool = self.by_name(name)
        with self.store.tx() as t:
            db.pools.update(t, pool["id"], db.to_json(tags))
        self._rows = None
        return self.get(name)

    def delete(self, name: str) -> None:
        with self.metrics.measure("pool_delete"):
            pool = self.by_name(name)
            with self.store.tx() as t:
                n = db.pools.volume_count(t, pool["id"])
                if n:
                    raise Conflict("pool %r still holds %d volume(s)" % (name, n))
                db.pools.delete(t, pool["id"])
            self._backends.pop(pool["id"], None)
            self._rows = None

    # -- the choice of a pool -----------------------------------------------------------------
    def matching(self, st: dict, include: Optional[list], exclude: Optional[list]) -> list[dict]:
        """Pools that carry every tag of the service type and of ``include``, none of ``exclude``."""
        need = set(st["pool_tags"]) | set(include or [])
        reject = set(exclude or [])
        return [p for p in self.rows() if need <= set(p["tags"]) and not reject & set(p["tags"])]

    def pick(self, st: dict, include, exclude) -> dict:
        pools = self.matching(st, include, exclude)
        if not pools:
            raise Conflict("no pool matches service type %s, include %s, exclude %s: check pool tags"
                           % (st["name"] or "(default)", sorted(include or []), sorted(exclude or [])))
        # most free space first; a pool whose capacity cannot be read is the last resort
        return max(pools, key=lambda p: self.capacity(p)["available"])


class ServiceTypes:
    def __init__(self, store: db.Store, metrics):
        self.store = store
        self.metrics = metrics

    @staticmethod
    def _out(row: dict) -> dict:
        return {"name": row["name"], "description": row["description"], "pool_tags": db.from_json(row["pool_tags"], []),
                "block_size": row["block_size"], "thin": bool(row["thin"]), "chap": bool(row["chap"]),
                "default": bool(row["is_default"]), "created_at": row["created_at"]}

    def create(self, name: str, description: str = "", pool_tags: Optional[list] = None, block_size: int = 512,
               thin: bool = True, chap: bool = False, default: bool = False, replace: bool = False) -> dict:
        with self.metrics.measure("service_type_create"):
            check_name(name, "service type name")
            if block_size not in (512, 4096):
                raise Invalid("block_size must be 512 or 4096")
            values = (description, db.to_json(pool_tags or []), block_size, 1 if thin else 0, 1 if chap else 0,
                      1 if default else 0)
            try:
                with self.store.tx() as t:
                    old = db.service_types.by_name(t, name)
                    if old and not replace:
                        raise Conflict("service type %r already exists" % name)
                    if default:
                        db.service_types.clear_default(t)
                    if old:
                        db.service_types.update(t, old["id"], values)
                    else:
                        db.service_types.insert(t, "st-" + secrets.token_hex(8), name, values, db.now())
            except db.UniqueViolation:
                raise Conflict("service type %r already exists" % name) from None
            return self.get(name)

    def list_(self) -> list[dict]:
        with self.store.tx() as t:
            return [self._out(r) for r in db.service_types.all_(t)]

    def get(self, name: str) -> dict:
        with self.store.tx() as t:
            row = db.service_types.by_name(t, name)
        if not row:
            raise NotFound("service type %r not found" % name)
        return self._out(row)

    def delete(self, name: str) -> None:
        self.get(name)
        with self.store.tx() as t:
            db.service_types.delete(t, name)

    def resolve(self, name: Optional[str]) -> dict:
        """The named service type, else the default one, else plain thin volumes from any pool."""
        if name:
            return self.get(name)
        with self.store.tx() as t:
            row = db.service_types.default(t)
        return self._out(row) if row else dict(NO_SERVICE_TYPE)
