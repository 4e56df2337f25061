"""Who is calling, and what they may do: tokens, principals, the tenant a call acts on.

Tokens are ``pvs_<id>_<secret>``; only the SHA-256 of the whole token is stored and compared in
constant time.  Valid tokens are remembered for ``AUTH_CACHE_TTL`` seconds (revoking one here
clears the cache at once; other instances sharing a PostgreSQL database see it within the TTL).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Optional

from .. import db
from ..errors import Forbidden, Invalid, NotFound, Unauthorized
from ..names import check_name

TOKEN_PREFIX = "pvs_"
AUTH_CACHE_TTL = 5.0


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


def require_admin(p: Principal, write: bool = True) -> None:
    if not p.admin:
        raise Forbidden("this operation needs an admin token")
    if write and p.readonly:
        raise Forbidden("read-only token")


def require_write(p: Principal) -> None:
    if p.readonly:
        raise Forbidden("read-only token: this operation changes state")


class Auth:
    """Authentication and the tokens of the service."""

    def __init__(self, store: db.Store, tenants, metrics, admin_token: Optional[str] = None):
        self.store = store
        self.tenants = tenants
        self.metrics = metrics
        self._admin_hash = token_hash(admin_token) if admin_token else None
        self._cache: dict[str, tuple[float, Principal]] = {}

    def authenticate(self, token: Optional[str]) -> Principal:
        if not token:
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        digest = token_hash(token)
        if self._admin_hash and hmac.compare_digest(digest, self._admin_hash):
            return Principal(admin=True)
        hit = self._cache.get(digest)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        parts = token.split("_")
        if len(parts) == 3 and token.startswith(TOKEN_PREFIX):
            with self.store.tx() as t:
                row = db.tokens.by_id(t, parts[1])
            if row and hmac.compare_digest(digest, row["hash"]):
                p = Principal(admin=row["tenant_id"] is None, tenant_id=row["tenant_id"], tenant=row["tenant"],
                              readonly=bool(row["readonly"]), token_id=row["id"])
                if len(self._cache) > 10000:
                    self._cache.clear()
                self._cache[digest] = (time.monotonic() + AUTH_CACHE_TTL, p)
                return p
        raise Unauthorized("invalid or revoked token")

    def forget(self) -> None:
        """Drop the cache of valid tokens (a token was revoked or a tenant deleted)."""
        self._cache.clear()

    def scope(self, p: Principal, tenant: Optional[str]) -> dict:
        """The tenant a volume operation acts on: the token's own, or ``tenant`` for admins."""
        if not p.admin:
            if tenant is not None and tenant != p.tenant:
                raise NotFound("tenant %r not found" % tenant)
            return {"id": p.tenant_id, "name": p.tenant}
        if tenant is None:
            raise Invalid("admin tokens must name the tenant (query parameter tenant=...)")
        return self.tenants.row(tenant)

    # -- tokens -------------------------------------------------------------------------------
    @staticmethod
    def _token_out(row: dict, tenant: Optional[str]) -> dict:
        return {"id": row["id"], "name": row["name"], "tenant": tenant, "readonly": bool(row["readonly"]),
                "created_at": row["created_at"]}

    def create_token(self, p: Principal, name: str, tenant: Optional[str], readonly: bool = False) -> dict:
        """A new token; its secret is returned once and only its SHA-256 is stored."""
        with self.metrics.measure("token_create"):
            require_write(p)
            check_name(name, "token name")
            if p.admin:
                owner = self.tenants.row(tenant) if tenant else None
            else:
                owner = self.scope(p, tenant)
            token_id = secrets.token_hex(6)
            secret = TOKEN_PREFIX + token_id + "_" + secrets.token_urlsafe(32).replace("_", "-")
            row = {"id": token_id, "name": name, "readonly": readonly, "created_at": db.now()}
            with self.store.tx() as t:
                db.tokens.insert(t, token_id, owner["id"] if owner else None, name, token_hash(secret), readonly,
                                 row["created_at"])
            return dict(self._token_out(row, owner["name"] if owner else None), token=secret)

    def list_tokens(self, p: Principal, tenant: Optional[str] = None) -> list[dict]:
        if not p.admin:
            owner = self.scope(p, tenant)
        else:
            owner = self.tenants.row(tenant) if tenant is not None else None
        with self.store.tx() as t:
            rows = db.tokens.list_(t, owner["id"]) if owner else db.tokens.list_(t, every_tenant=True)
        return [self._token_out(r, r["tenant"]) for r in rows]

    def revoke_token(self, p: Principal, token_id: str) -> None:
        with self.metrics.measure("token_revoke"):
            require_write(p)
            with self.store.tx() as t:
                row = db.tokens.by_id(t, token_id)
                if not row or (not p.admin and row["tenant_id"] != p.tenant_id):
                    raise NotFound("token %r not found" % token_id)
                db.tokens.delete(t, token_id)
            self.forget()
