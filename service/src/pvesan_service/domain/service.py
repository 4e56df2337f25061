"""The service: the domain parts wired together, with what concerns the whole (capacity status,
health, the database's identity and key, the upgrade of rows from older releases).

    service.auth            tokens and principals            domain/auth.py
    service.tenants         tenants, CHAP, ACL, quota        domain/tenants.py
    service.pools           pools and their backends         domain/pools.py
    service.service_types   provisioning templates           domain/pools.py
    service.volumes         volumes, two-phase, repair       domain/volumes.py
    service.snapshots       snapshots, rollbacks, clones     domain/snapshots.py
    service.exports         the iSCSI target's side          domain/exports.py
"""
from __future__ import annotations

import logging
import secrets
from typing import Callable, Optional

from .. import db
from ..backends import VolumeBackend, make_backend
from ..errors import Conflict, Invalid
from ..metrics import Metrics
from ..targets.base import Chap, TargetDriver
from . import chap as chaps
from .auth import Auth, Principal
from .exports import Exports
from .locks import KeyedLocks
from .pools import DEFAULT_ALARMS, Pools, ServiceTypes
from .secretbox import SecretBox, SecretBoxError
from .snapshots import Snapshots
from .tenants import Tenants
from .volumes import Volumes

log = logging.getLogger("pvesan.service")


class Service:
    def __init__(self, store: db.Store, target: TargetDriver, *, iqn_prefix: str = "iqn.2026-11.org.pvesan",
                 portals: Optional[list[str]] = None, admin_token: Optional[str] = None,
                 capacity_ttl: float = 2.0, secret_box: Optional[SecretBox] = None,
                 backend_factory: Callable[..., VolumeBackend] = make_backend, pool_alarms: tuple = DEFAULT_ALARMS):
        self.store = store
        # CHAP secrets are sealed with it in the database (a throw-away key unless one is given:
        # pvesan-service passes the key of its secret_key_file)
        self.box = secret_box or SecretBox.generate()
        self.metrics = Metrics()
        self.exports = Exports(target, self.box, iqn_prefix, portals or ["127.0.0.1:3260"])
        self.pools = Pools(store, self.metrics, capacity_ttl, backend_factory, pool_alarms)
        self.service_types = ServiceTypes(store, self.metrics)
        # Tenants re-export volumes and forget tokens through the parts made after it
        self.tenants = Tenants(store, self.box, self.exports, self.metrics, capacity_ttl,
                               reexport=lambda vids: self.volumes.reexport(vids),  # pylint: disable=unnecessary-lambda
                               forget_tokens=lambda: self.auth.forget())  # pylint: disable=unnecessary-lambda
        self.auth = Auth(store, self.tenants, self.metrics, admin_token)
        self.volumes = Volumes(store, self.box, self.metrics, KeyedLocks(), self.pools, self.service_types,
                               self.tenants, self.exports)
        self.snapshots = Snapshots(self.volumes)
        self.metrics.watch(self.tenants.usage_by_tenant, self.pools.capacities, lambda: self.exports.up)
        self.instance_id = self._prepare_meta()
        self.upgrade_legacy_rows()

    # -- the database's identity and key ------------------------------------------------------
    def _prepare_meta(self) -> str:
        """Check that the database's secrets open with our key (a check value sealed with it is
        kept beside them) and return the database's instance id (made once: it identifies this
        storage across restarts and failovers)."""
        with self.store.tx() as t:
            db.meta.ensure(t, "instance_id", secrets.token_hex(16))
            db.meta.ensure(t, "key_check", self.box.key_check())
            meta = db.meta.all_(t)
        try:
            self.box.verify(meta["key_check"])
        except SecretBoxError as exc:
            raise db.StoreError("the database's secrets were sealed with another key: %s" % exc) from None
        return meta["instance_id"]

    def upgrade_legacy_rows(self) -> None:
        """Bring rows of releases before schema 2 up to date (once; cheap when there is nothing):
        store the IQNs they were exported under (they never change), and move plaintext CHAP
        credentials into sealed accounts.  A CHAP name that several tenants shared (the takeover
        this schema prevents) stays with the tenant that used it first; the others get generated
        credentials, and a warning says which volumes changed."""
        with self.store.tx() as t:
            db.volumes.backfill_iqns(t, self.exports.iqn_prefix + ":")
            tenants = db.tenants.with_plaintext_chap(t)
            volumes = db.volumes.with_plaintext_chap(t)
            for kind, row in [("tenant", r) for r in tenants] + [("volume", r) for r in volumes]:
                owner = row["tenant_id"] if kind == "volume" else row["id"]
                old = db.from_json(row["chap"])
                mutual = old.get("mutual") or {}
                cred = Chap(old["user"], old["password"], mutual.get("user"), mutual.get("password"))
                try:
                    chaps.validate(cred)
                    chaps.claim(t, self.box, owner, cred)
                except (Conflict, Invalid) as exc:
                    cred = chaps.resolve({"mutual": {}} if cred.mutual_user else {})
                    chaps.claim(t, self.box, owner, cred)
                    log.warning("%s %s: its CHAP credentials could not be kept (%s); it got generated ones: "
                                "update the initiators", kind,
                                row["name"] if kind == "tenant" else "%s/%s" % (row["tenant"], row["name"]), exc.message)
                if kind == "tenant":
                    db.tenants.drop_plaintext_chap(t, row["id"], cred.user, cred.mutual_user)
                else:
                    db.volumes.drop_plaintext_chap(t, row["id"], cred.user, cred.mutual_user)
            if tenants:
                db.volumes.take_tenant_chap(t)

    # -- status and health --------------------------------------------------------------------
    def status(self, p: Principal, tenant: Optional[str] = None, service_type: Optional[str] = None,
               query_include: Optional[list] = None, query_exclude: Optional[list] = None) -> dict:
        """Real capacity of every pool, the sum over the pools a Proxmox storage would allocate
        from (service type + include/exclude tags), and the tenant's own usage."""
        st = self.service_types.resolve(service_type)
        selected = {pool["id"] for pool in self.pools.matching(st, query_include, query_exclude)}
        pools, total, used, avail = [], 0, 0, 0
        for pool in self.pools.rows():
            cap = self.pools.capacity(pool)
            pools.append({"name": pool["name"], "kind": pool["kind"], "tags": pool["tags"], "total": cap["total"],
                          "used": cap["used"], "available": cap["available"], "error": cap["error"],
                          "provisioned": cap["provisioned"], "allocated": cap["allocated"],
                          "subscription": cap["subscription"], "alarm": self.pools.alarm_of(pool)})
            if pool["id"] in selected and not cap["error"]:
                total += cap["total"]
                used += cap["used"]
                avail += cap["available"]
        out = {"pools": pools, "total": total, "used": used, "available": avail, "active": bool(selected),
               "target_up": self.exports.up, "instance_id": self.instance_id, "tenant": None}
        if p.admin and tenant is None:
            return out
        scope = self.auth.scope(p, tenant)
        out["tenant"] = dict(name=scope["name"], **self.tenants.usage(scope["id"]))
        quota = out["tenant"]["quota_bytes"]
        if quota is not None:  # a quota caps what this tenant can still allocate
            out["total"] = min(total, quota)
            out["available"] = max(0, min(avail, quota - out["tenant"]["provisioned_bytes"]))
            out["used"] = min(out["total"], out["tenant"]["provisioned_bytes"])
        return out

    def healthy(self) -> dict:
        try:
            version = self.store.version()
            database = True
        except Exception:
            version, database = None, False
        alarms = self.pools.alarms() if database else []
        return {"status": "ok" if database and self.exports.up and not alarms else "degraded", "database": database,
                "schema_version": version, "target_up": self.exports.up, "alarms": alarms}

    def close(self) -> None:
        self.volumes.committer.shutdown()
