"""Tenants: one per Proxmox cluster, with its CHAP credentials, initiator ACL and quota."""
from __future__ import annotations

import secrets
import time
from typing import Callable, Iterable, Mapping, Optional

from .. import db
from ..errors import Conflict, NotFound
from ..names import check_name
from ..targets.base import Chap
from . import chap as chaps
from .exports import Exports
from .secretbox import SecretBox


class Tenants:
    def __init__(self, store: db.Store, box: SecretBox, exports: Exports, metrics, capacity_ttl: float,
                 reexport: Callable[[Iterable[str]], None], forget_tokens: Callable[[], None]):
        self.store = store
        self.box = box
        self.exports = exports
        self.metrics = metrics
        self.capacity_ttl = capacity_ttl
        self.reexport = reexport  # re-export volumes by id (the volumes' own lock each)
        self.forget_tokens = forget_tokens  # a deleted tenant's tokens must stop working at once
        self._usage: dict[str, tuple[float, dict]] = {}

    def row(self, name: str) -> dict:
        with self.store.tx() as t:
            row = db.tenants.by_name(t, name)
        if not row:
            raise NotFound("tenant %r not found" % name)
        return row

    def chap_of(self, row: dict) -> Optional[Chap]:
        return chaps.opened(self.box, row["chap_user"], row["chap_secret"], row["chap_mutual_user"], row["chap_mutual_secret"])

    def _out(self, row: dict) -> dict:
        return {"name": row["name"], "chap": chaps.out(self.chap_of(row)),
                "initiators": db.from_json(row["initiators"], []), "quota_bytes": row["quota_bytes"],
                "created_at": row["created_at"]}

    def create(self, name: str, chap: Optional[Mapping] = chaps.GENERATE, initiators: Optional[list] = None,
               quota_bytes: Optional[int] = None) -> dict:
        """A new tenant.  Secure by default: generated CHAP credentials unless ``chap`` is None,
        and no initiator may log in until ``initiators`` names them (``["ALL"]``: any)."""
        with self.metrics.measure("tenant_create"):
            check_name(name, "tenant name")
            cred = None if chap is None else chaps.resolve(chap)
            acl = db.to_json(self.exports.acl(initiators or []))
            tenant_id = "t-" + secrets.token_hex(8)
            try:
                with self.store.tx() as t:
                    db.tenants.insert(t, tenant_id, name, acl, quota_bytes, db.now())
                    if cred:
                        chaps.claim(t, self.box, tenant_id, cred)
                        db.tenants.update(t, tenant_id, chap_user=cred.user, chap_mutual_user=cred.mutual_user)
            except db.UniqueViolation:
                raise Conflict("tenant %r already exists" % name) from None
            return self.get(name)

    def list_(self) -> list[dict]:
        with self.store.tx() as t:
            return [self._out(r) for r in db.tenants.all_(t)]

    def get(self, name: str) -> dict:
        return self._out(self.row(name))

    def update(self, name: str, changes: dict) -> dict:
        """Change CHAP, initiators or quota; re-exports the volumes that inherit them.  ``chap``:
        None removes it, a dict sets it (``{}``: a new generated secret for the same user)."""
        with self.metrics.measure("tenant_update"):
            row = self.row(name)
            fields, rotated = {}, []
            if "initiators" in changes:
                fields["initiators"] = db.to_json(self.exports.acl(changes["initiators"] or []))
            if "quota_bytes" in changes:
                fields["quota_bytes"] = changes["quota_bytes"]
            with self.store.tx() as t:
                if "chap" in changes:
                    old = self.chap_of(row)
                    cred = None if changes["chap"] is None else chaps.resolve(changes["chap"], old)
                    if cred:
                        rotated = chaps.claim(t, self.box, row["id"], cred, rotate=True)
                    fields.update(chap_user=cred.user if cred else None, chap_mutual_user=cred.mutual_user if cred else None)
                if fields:
                    db.tenants.update(t, row["id"], **fields)
                if "chap" in changes:
                    db.volumes.follow_tenant_chap(t, row["id"], fields["chap_user"], fields["chap_mutual_user"])
                    if old:
                        db.chap_accounts.release(t, (old.user, old.mutual_user))
                vids = db.volumes.ready_following_tenant(t, row["id"]) + db.volumes.ready_using_chap(t, rotated)
            if "initiators" in changes or "chap" in changes:
                self.reexport(vids)
            return self.get(name)

    def delete(self, name: str) -> None:
        with self.metrics.measure("tenant_delete"):
            row = self.row(name)
            with self.store.tx() as t:
                n = db.tenants.volume_count(t, row["id"])
                if n:
                    raise Conflict("tenant %r still has %d volume(s): delete them first" % (name, n))
                db.tenants.delete(t, row["id"])
            self.forget_tokens()

    # -- usage and quota ----------------------------------------------------------------------
    def usage(self, tenant_id: str) -> dict:
        """Volumes, provisioned bytes and quota of a tenant (cached ``capacity_ttl``, dropped by
        the tenant's own changes)."""
        hit = self._usage.get(tenant_id)
        t0 = time.monotonic()
        if hit and hit[0] > t0:
            return hit[1]
        with self.store.tx() as t:
            usage = db.tenants.usage(t, tenant_id)
        self._usage[tenant_id] = (t0 + self.capacity_ttl, usage)
        return usage

    def invalidate_usage(self, tenant_id: str) -> None:
        self._usage.pop(tenant_id, None)

    @staticmethod
    def check_quota(t, tenant_row: dict, size: int) -> None:
        """Inside the transaction that adds ``size`` bytes to the tenant."""
        quota = tenant_row["quota_bytes"]
        if quota is None:
            return
        t.lock_row("tenants", tenant_row["id"])
        used = db.tenants.provisioned_bytes(t, tenant_row["id"])
        if used + size > quota:
            raise Conflict("tenant quota exceeded: %d of %d bytes provisioned, %d more asked" % (used, quota, size))

    def usage_by_tenant(self) -> list[dict]:
        with self.store.tx() as t:
            return db.tenants.usage_by_tenant(t)
