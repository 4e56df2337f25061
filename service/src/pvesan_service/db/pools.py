"""Table ``pools``: backing stores of the host (options and tags as JSON)."""
from __future__ import annotations

from typing import Optional

from .store import from_json


def _decoded(row: dict) -> dict:
    row["tags"] = from_json(row["tags"], [])
    row["options"] = from_json(row["options"], {})
    return row


def all_(t) -> list[dict]:
    return [_decoded(r) for r in t.execute("SELECT * FROM pools ORDER BY name").all()]


def by_name(t, name: str) -> Optional[dict]:
    row = t.execute("SELECT * FROM pools WHERE name = ?", (name,)).one()
    return _decoded(row) if row else None


def insert(t, pool_id: str, name: str, kind: str, options: str, tags: str, created_at: str) -> None:
    t.execute("INSERT INTO pools (id, name, kind, options, tags, created_at) VALUES (?,?,?,?,?,?)",
              (pool_id, name, kind, options, tags, created_at))


CHANGEABLE = ("tags", "options", "max_subscription", "reserve_percent")


def update(t, pool_id: str, **fields) -> None:
    assert fields and set(fields) <= set(CHANGEABLE), fields
    t.execute("UPDATE pools SET %s WHERE id = ?" % ", ".join("%s = ?" % k for k in fields), (*fields.values(), pool_id))


def provisioning(t, pool_id: str) -> dict:
    """Bytes the pool's volumes provision (their sizes) and allocate (as last measured), and the
    sizes of thick volumes being created (not yet taken from the pool's free bytes)."""
    row = t.execute("SELECT COALESCE(SUM(size), 0) AS p, COALESCE(SUM(allocated_bytes), 0) AS a, "
                    "COALESCE(SUM(CASE WHEN state = 'creating' AND thin = 0 THEN size ELSE 0 END), 0) AS c "
                    "FROM volumes WHERE pool_id = ?", (pool_id,)).one()
    return {"provisioned": int(row["p"]), "allocated": int(row["a"]), "thick_creating": int(row["c"])}


def volume_count(t, pool_id: str) -> int:
    return int(t.execute("SELECT COUNT(*) AS n FROM volumes WHERE pool_id = ?", (pool_id,)).one()["n"])


def delete(t, pool_id: str) -> None:
    t.execute("DELETE FROM pools WHERE id = ?", (pool_id,))
