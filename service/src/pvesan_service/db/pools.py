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


def update(t, pool_id: str, tags: str, options: Optional[str] = None) -> None:
    if options is None:
        t.execute("UPDATE pools SET tags = ? WHERE id = ?", (tags, pool_id))
    else:
        t.execute("UPDATE pools SET options = ?, tags = ? WHERE id = ?", (options, tags, pool_id))


def volume_count(t, pool_id: str) -> int:
    return int(t.execute("SELECT COUNT(*) AS n FROM volumes WHERE pool_id = ?", (pool_id,)).one()["n"])


def delete(t, pool_id: str) -> None:
    t.execute("DELETE FROM pools WHERE id = ?", (pool_id,))
