"""Pools (backing stores on the host) and service types (provisioning templates), and the choice
of a pool for a new volume."""
from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Callable, Optional

from .. import db
from ..backends import VolumeBackend, make_backend
from ..errors import Conflict, Invalid, NotFound
from ..names import check_name

log = logging.getLogger("pvesan.pools")
NO_SERVICE_TYPE = {"name": None, "pool_tags": [], "block_size": 512, "thin": True, "chap": False}


DEFAULT_MAX_SUBSCRIPTION = 20.0  # provisioned bytes per usable byte, Cinder's default
DEFAULT_ALARMS = (0.85, 0.95)  # used fractions of a pool that warn, then that are critical


class Pools:
    """Pool rows (cached: every volume operation needs its pool), their backends and capacity,
    how much of each is provisioned and allocated, the over-subscription guard and the alarms."""

    def __init__(self, store: db.Store, metrics, capacity_ttl: float,
                 backend_factory: Callable[..., VolumeBackend] = make_backend, alarms: tuple = DEFAULT_ALARMS):
        self.store = store
        self.metrics = metrics
        self.capacity_ttl = capacity_ttl
        self._backend_factory = backend_factory
        self._backends: dict[str, VolumeBackend] = {}
        self._rows: Optional[list[dict]] = None  # dropped on pool changes
        self._capacity: dict[str, tuple[float, dict]] = {}
        self._lock = threading.Lock()
        self.alarm_levels = tuple(sorted(alarms))
        self._alarm: dict[str, int] = {}  # pool name -> alarm level last seen (0: none)

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

    # -- capacity, provisioning, alarms -------------------------------------------------------
    def _measured(self, pool: dict, fresh: bool = False) -> dict:
        """The pool's real bytes as its backend reports them (cached ``capacity_ttl``)."""
        hit = self._capacity.get(pool["id"])
        t0 = time.monotonic()
        if hit and hit[0] > t0 and not fresh:
            return hit[1]
        try:
            c = self.backend(pool).capacity()
            real = {"total": c.total, "used": c.used, "available": c.available, "error": None}
        except Exception as exc:  # a broken pool must not break /status for the others
            real = {"total": 0, "used": 0, "available": 0, "error": str(exc)}
        self._capacity[pool["id"]] = (t0 + self.capacity_ttl, real)
        self._watch(pool, real)
        return real

    def capacity(self, pool: dict) -> dict:
        """Real bytes of the pool, what its volumes provision and allocate, the usable bytes
        (less the reserve) and the subscription (provisioned per usable byte)."""
        cap = dict(self._measured(pool))
        with self.store.tx() as t:
            cap.update(db.pools.provisioning(t, pool["id"]))
        cap["usable"] = _usable(pool, cap)
        cap["subscription"] = round(cap["provisioned"] / cap["usable"], 3) if cap["usable"] else None
        return cap

    def forget_capacity(self, pool_id: str) -> None:
        self._capacity.pop(pool_id, None)

    def _watch(self, pool: dict, real: dict) -> None:
        """Log once when the pool's used fraction crosses an alarm level, either way."""
        if real["error"] or not real["total"]:
            return
        used = real["used"] / real["total"]
        level = sum(1 for limit in self.alarm_levels if used >= limit)
        old = self._alarm.get(pool["name"], 0)
        if level != old:
            self._alarm[pool["name"]] = level
            if level > old:
                log.log(logging.ERROR if level == len(self.alarm_levels) else logging.WARNING,
                        "pool %s is %.0f%% used (alarm at %.0f%%): free space or add capacity before writes fail",
                        pool["name"], used * 100, self.alarm_levels[level - 1] * 100)
            else:
                log.info("pool %s is %.0f%% used again: alarm level %d -> %d", pool["name"], used * 100, old, level)

    def alarm_of(self, pool: dict) -> int:
        """0: below every alarm level; 1: warning; 2: critical."""
        self._measured(pool)
        return self._alarm.get(pool["name"], 0)

    def alarms(self) -> list[str]:
        """Why the service is degraded: every pool at or above an alarm level."""
        out = []
        for pool in self.rows():
            real, level = self._measured(pool), self.alarm_of(pool)
            if level:
                out.append("pool %s is %.0f%% used (%s at %.0f%%)" % (
                    pool["name"], 100.0 * real["used"] / real["total"],
                    "critical" if level == len(self.alarm_levels) else "warning", self.alarm_levels[level - 1] * 100))
        return out

    def _refusal(self, pool: dict, real: dict, sums: dict, size: int, thin: bool) -> Optional[str]:
        """Why ``size`` more bytes may not be provisioned in the pool (None: they may).  Thin
        volumes may provision up to max_subscription x the usable bytes (the pool less its reserve);
        thick volumes need the bytes free beyond the reserve."""
        if real["error"]:
            return None  # the backend says for itself what is wrong
        usable = _usable(pool, real)
        if thin:
            limit = pool["max_subscription"]
            if limit is not None and sums["provisioned"] + size > limit * usable:
                return ("pool %s would be over-subscribed: %d bytes provisioned + %d asked > %g x %d usable bytes "
                        "(raise max_subscription or add capacity)"
                        % (pool["name"], sums["provisioned"], size, limit, usable))
            return None
        free = real["available"] - (real["total"] - usable) - sums["thick_creating"]
        if size > free:
            return ("pool %s lacks %d bytes for a thick volume: %d asked, %d free beyond its reserve of %g%%"
                    % (pool["name"], size - max(free, 0), size, max(free, 0), pool["reserve_percent"]))
        return None

    def refusal(self, pool: dict, size: int, thin: bool) -> Optional[str]:
        cap = self.capacity(pool)
        return self._refusal(pool, cap, cap, size, thin)

    def admit(self, t, pool: dict, size: int, thin: bool) -> None:
        """Inside the transaction that adds ``size`` bytes to the pool: refuse (409) what would
        over-subscribe it.  Thick volumes take real bytes at once, so their check reads the pool
        again; thin ones are checked against the sizes in the database."""
        t.lock_row("pools", pool["id"])
        real = self._measured(pool, fresh=not thin)
        reason = self._refusal(pool, real, db.pools.provisioning(t, pool["id"]), size, thin)
        if reason:
            raise Conflict(reason)

    def capacities(self) -> list[dict]:
        return [dict(name=p["name"], alarm=self.alarm_of(p), **self.capacity(p)) for p in self.rows()]

    def _out(self, pool: dict) -> dict:
        cap = self.capacity(pool)
        return {"name": pool["name"], "kind": pool["kind"], "tags": pool["tags"], "options": pool["options"],
                "total": cap["total"], "used": cap["used"], "available": cap["available"], "error": cap["error"],
                "provisioned": cap["provisioned"], "allocated": cap["allocated"], "usable": cap["usable"],
                "subscription": cap["subscription"], "max_subscription": pool["max_subscription"],
                "reserve_percent": pool["reserve_percent"], "alarm": self.alarm_of(pool), "created_at": pool["created_at"]}

    def create(self, name: str, kind: str, options: dict, tags: list[str], replace: bool = False,
               max_subscription: Optional[float] = DEFAULT_MAX_SUBSCRIPTION, reserve_percent: float = 0.0) -> dict:
        """Register a pool after checking the backend can use it.  ``replace`` (config file pools)
        updates options/tags/limits of an existing pool of the same kind."""
        with self.metrics.measure("pool_create"):
            check_name(name, "pool name")
            _check_limits(max_subscription, reserve_percent)
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
                        db.pools.update(t, old["id"], tags=db.to_json(tags), options=db.to_json(options),
                                        max_subscription=max_subscription, reserve_percent=reserve_percent)
                        pool_id = old["id"]
                    else:
                        pool_id = "p-" + secrets.token_hex(8)
                        db.pools.insert(t, pool_id, name, kind, db.to_json(options), db.to_json(tags), db.now())
                        db.pools.update(t, pool_id, max_subscription=max_subscription, reserve_percent=reserve_percent)
            except db.UniqueViolation:
                raise Conflict("pool %r already exists" % name) from None
            self._backends[pool_id] = backend
            self._rows = None
            self.forget_capacity(pool_id)
            return self.get(name)

    def list_(self) -> list[dict]:
        return [self._out(p) for p in self.rows()]

    def get(self, name: str) -> dict:
        return self._out(self.by_name(name))

    def update(self, name: str, changes: dict) -> dict:
        """``tags``, ``max_subscription`` (None: no limit), ``reserve_percent``."""
        pool = self.by_name(name)
        fields = {}
        if "tags" in changes:
            fields["tags"] = db.to_json(changes["tags"] or [])
        for key in ("max_subscription", "reserve_percent"):
            if key in changes:
                fields[key] = changes[key]
        _check_limits(fields.get("max_subscription", pool["max_subscription"]),
                      fields.get("reserve_percent", pool["reserve_percent"]))
        if fields:
            with self.store.tx() as t:
                db.pools.update(t, pool["id"], **fields)
        self._rows = None
        self.forget_capacity(pool["id"])
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

    def pick(self, st: dict, include, exclude, size: int) -> dict:
        """The matching pool with the most available bytes among those that may take ``size``
        more bytes of this service type (409 saying why when none may).  The create's own
        transaction checks again (``admit``): this is the choice, that is the guard."""
        pools = self.matching(st, include, exclude)
        if not pools:
            raise Conflict("no pool matches service type %s, include %s, exclude %s: check pool tags"
                           % (st["name"] or "(default)", sorted(include or []), sorted(exclude or [])))
        if len(pools) == 1:
            return pools[0]
        # most free space first; a pool whose capacity cannot be read is the last resort
        pools.sort(key=lambda p: self._measured(p)["available"], reverse=True)
        reasons = []
        for pool in pools:
            reason = self.refusal(pool, size, bool(st["thin"]))
            if reason is None:
                return pool
            reasons.append(reason)
        raise Conflict("no pool can take %d more bytes: %s" % (size, "; ".join(reasons)))


def _usable(pool: dict, real: dict) -> int:
    return int(real["total"] * (1 - pool["reserve_percent"] / 100.0))


def _check_limits(max_subscription, reserve_percent) -> None:
    if max_subscription is not None and not 0 < max_subscription <= 1000:
        raise Invalid("max_subscription must be above 0 and at most 1000 (provisioned bytes per usable byte), or null")
    if not 0 <= reserve_percent < 100:
        raise Invalid("reserve_percent must be at least 0 and below 100")


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
