"""Table ``service_types``: provisioning templates."""
from __future__ import annotations

from typing import Optional

FIELDS = ("description", "pool_tags", "block_size", "thin", "chap", "is_default")


def by_name(t, name: str) -> Optional[dict]:
    return t.execute("SELECT * FROM service_types WHERE name = ?", (name,)).one()


def default(t) -> Optional[dict]:
    return t.execute("SELECT * FROM service_types WHERE is_default = 1").one()


def all_(t) -> list[dict]:
    return t.execute("SELECT * FROM service_types ORDER BY name").all()


def clear_default(t) -> None:
    t.execute("UPDATE service_types SET is_default = 0")


def insert(t, st_id: str, name: str, values: tuple, created_at: str) -> None:
    """``values`` in the order of ``FIELDS``."""
    t.execute("INSERT INTO service_types (id, name, %s, created_at) VALUES (?,?,?,?,?,?,?,?,?)" % ", ".join(FIELDS),
              (st_id, name, *values, created_at))


def update(t, st_id: str, values: tuple) -> None:
    t.execute("UPDATE service_types SET %s WHERE id = ?" % ", ".join("%s = ?" % f for f in FIELDS), (*values, st_id))


def delete(t, name: str) -> None:
    t.execute("DELETE FROM service_types WHERE name = ?", (name,))
