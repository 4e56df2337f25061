"""Table ``tenants`` (one per Proxmox cluster), with the sealed secrets of its CHAP accounts."""
from __future__ import annotations

from typing import Optional

SELECT = ("SELECT t.*, ca.secret AS chap_secret, cm.secret AS chap_mutual_secret FROM tenants t "
          "LEFT JOIN chap_accounts ca ON ca.username = t.chap_user "
          "LEFT JOIN chap_accounts cm ON cm.username = t.chap_mutual_user ")
CHANGEABLE = ("initiators", "quota_bytes", "chap_user", "chap_mutual_user")


def by_name(t, name: str) -> Optional[dict]:
    return t.execute(SELECT + "WHERE t.name = ?", (name,)).one()


def all_(t) -> list[dict]:
    return t.execute(SELECT + "ORDER BY t.name").all()


def insert(t, tenant_id: str, name: str, initiators: str, quota_bytes: Optional[int], created_at: str) -> None:
    t.execute("INSERT INTO tenants (id, name, initiators, quota_bytes, created_at) VALUES (?,?,?,?,?)",
              (tenant_id, name, initiators, quota_bytes, created_at))


def update(t, tenant_id: str, **fields) -> None:
    assert fields and set(fields) <= set(CHANGEABLE), fields
    t.execute("UPDATE tenants SET %s WHERE id = ?" % ", ".join("%s = ?" % k for k in fields), (*fields.values(), tenant_id))


def volume_count(t, tenant_id: str) -> int:
    return int(t.execute("SELECT COUNT(*) AS n FROM volumes WHERE tenant_id = ?", (tenant_id,)).one()["n"])


def delete(t, tenant_id: str) -> None:
    """The tenant with its tokens and CHAP accounts (it has no volumes left)."""
    t.execute("DELETE FROM tokens WHERE tenant_id = ?", (tenant_id,))
    t.execute("UPDATE tenants SET chap_user = NULL, chap_mutual_user = NULL WHERE id = ?", (tenant_id,))
    t.execute("DELETE FROM chap_accounts WHERE tenant_id = ?", (tenant_id,))
    t.execute("DELETE FROM tenants WHERE id = ?", (tenant_id,))


def usage(t, tenant_id: str) -> dict:
    row = t.execute("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS s, COALESCE(SUM(allocated_bytes), 0) AS a "
                    "FROM volumes WHERE tenant_id = ?", (tenant_id,)).one()
    quota = t.execute("SELECT quota_bytes FROM tenants WHERE id = ?", (tenant_id,)).one()
    return {"volumes": int(row["n"]), "provisioned_bytes": int(row["s"]), "allocated_bytes": int(row["a"]),
            "quota_bytes": quota["quota_bytes"] if quota else None}


def provisioned_bytes(t, tenant_id: str) -> int:
    return int(t.execute("SELECT COALESCE(SUM(size), 0) AS s FROM volumes WHERE tenant_id = ?", (tenant_id,)).one()["s"])


def usage_by_tenant(t) -> list[dict]:
    rows = t.execute("SELECT t.name AS tenant, COUNT(v.id) AS n, COALESCE(SUM(v.size), 0) AS s, "
                     "COALESCE(SUM(v.allocated_bytes), 0) AS a FROM tenants t "
                     "LEFT JOIN volumes v ON v.tenant_id = t.id GROUP BY t.name ORDER BY t.name").all()
    return [{"tenant": r["tenant"], "volumes": int(r["n"]), "provisioned_bytes": int(r["s"]), "allocated_bytes": int(r["a"])}
            for r in rows]


def with_plaintext_chap(t) -> list[dict]:
    """Tenants of releases before schema 2 (CHAP as plain JSON), oldest first."""
    return t.execute("SELECT id, name, chap FROM tenants WHERE chap IS NOT NULL ORDER BY created_at, id").all()


def drop_plaintext_chap(t, tenant_id: str, chap_user: str, chap_mutual_user: Optional[str]) -> None:
    t.execute("UPDATE tenants SET chap = NULL, chap_user = ?, chap_mutual_user = ? WHERE id = ?",
              (chap_user, chap_mutual_user, tenant_id))
