"""Table ``service_meta``: facts about this database (its instance id, the key check value)."""
from __future__ import annotations


def ensure(t, key: str, value: str) -> None:
    """Set ``key`` unless it is set (a value made once stays)."""
    t.execute("INSERT INTO service_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))


def all_(t) -> dict[str, str]:
    return {r["key"]: r["value"] for r in t.execute("SELECT key, value FROM service_meta").all()}
