"""Table ``tokens``: API tokens, stored as the SHA-256 of the whole token."""
from __future__ import annotations

from typing import Optional

SELECT = "SELECT k.*, t.name AS tenant FROM tokens k LEFT JOIN tenants t ON t.id = k.tenant_id "


def by_id(t, token_id: str) -> Optional[dict]:
    """The token with its tenant's name (None for admin tokens)."""
    return t.execute(SELECT + "WHERE k.id = ?", (token_id,)).one()


def insert(t, token_id: str, tenant_id: Optional[str], name: str, digest: str, readonly: bool, created_at: str) -> None:
    t.execute("INSERT INTO tokens (id, tenant_id, name, hash, readonly, created_at) VALUES (?,?,?,?,?,?)",
              (token_id, tenant_id, name, digest, 1 if readonly else 0, created_at))


def list_(t, tenant_id: Optional[str] = None, every_tenant: bool = False) -> list[dict]:
    """Tokens of one tenant, or of all tenants and admins with ``every_tenant``."""
    if every_tenant:
        return t.execute(SELECT + "ORDER BY k.created_at, k.id").all()
    return t.execute(SELECT + "WHERE k.tenant_id = ? ORDER BY k.created_at, k.id", (tenant_id,)).all()


def delete(t, token_id: str) -> None:
    t.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
