"""Tables ``volumes`` and ``snapshots``: volumes with their export settings, snapshots of them.

A volume row joined (``SELECT``) carries what exporting it needs: its tenant's name and ACL, the
sealed secrets of its CHAP accounts, its clone origin's names.
"""
from __future__ import annotations

import json
from typing import Any, Optional

SELECT = ("SELECT v.*, t.name AS tenant, t.initiators AS tenant_initiators, "
          "ca.secret AS chap_secret, cm.secret AS chap_mutual_secret, "
          "p.name AS parent, s.name AS parent_snapshot FROM volumes v JOIN tenants t ON t.id = v.tenant_id "
          "LEFT JOIN chap_accounts ca ON ca.username = v.chap_user "
          "LEFT JOIN chap_accounts cm ON cm.username = v.chap_mutual_user "
          "LEFT JOIN volumes p ON p.id = v.parent_id LEFT JOIN snapshots s ON s.id = v.parent_snapshot_id ")
COLUMNS = ("id", "tenant_id", "name", "pool_id", "service_type", "size", "thin", "block_size", "vmid", "tags",
           "chap_source", "chap_user", "chap_mutual_user", "initiators", "iqn", "backing_path", "parent_id",
           "parent_snapshot_id", "state", "created_at", "updated_at")
CHANGEABLE = ("name", "vmid", "size", "tags", "initiators", "chap_source", "chap_user", "chap_mutual_user",
              "backing_path", "state", "updated_at")

# One JSON object per row, built by the database (escaping included): no Python dict or
# json.dumps per volume, so a list of 5,000 summaries is one query and one join of strings.
_SUMMARY = {
    False: ("json_object('id', v.id, 'name', v.name, 'size', v.size, 'vmid', v.vmid, 'tags', json(v.tags), "
            "'state', v.state, 'pool', pl.name, 'parent', p.name, 'parent_snapshot', s.name, "
            "'iqn', v.iqn, 'allocated', v.allocated_bytes, 'created_at', v.created_at)"),
    True: ("json_build_object('id', v.id, 'name', v.name, 'size', v.size, 'vmid', v.vmid, 'tags', v.tags::json, "
           "'state', v.state, 'pool', pl.name, 'parent', p.name, 'parent_snapshot', s.name, "
           "'iqn', v.iqn, 'allocated', v.allocated_bytes, 'created_at', v.created_at)::text"),
}


def by_id(t, vid: str) -> Optional[dict]:
    return t.execute(SELECT + "WHERE v.id = ?", (vid,)).one()


def by_name(t, tenant_id: str, name: str) -> Optional[dict]:
    return t.execute(SELECT + "WHERE v.tenant_id = ? AND v.name = ?", (tenant_id, name)).one()


def in_state(t, *states: str) -> list[dict]:
    return t.execute(SELECT + "WHERE v.state IN (%s)" % ",".join("?" * len(states)), states).all()


def all_ids(t) -> set[str]:
    return {r["id"] for r in t.execute("SELECT id FROM volumes").all()}


def exists(t, vid: str) -> bool:
    return t.execute("SELECT id FROM volumes WHERE id = ?", (vid,)).one() is not None


def insert(t, **row) -> None:
    """A new volume row; ``row`` has every column of ``COLUMNS``."""
    assert set(row) == set(COLUMNS), set(row) ^ set(COLUMNS)
    t.execute("INSERT INTO volumes (%s) VALUES (%s)" % (", ".join(COLUMNS), ",".join("?" * len(COLUMNS))),
              tuple(row[c] for c in COLUMNS))


def update(t, vid: str, **fields) -> None:
    assert fields and set(fields) <= set(CHANGEABLE), fields
    t.execute("UPDATE volumes SET %s WHERE id = ?" % ", ".join("%s = ?" % k for k in fields), (*fields.values(), vid))


def delete(t, vid: str) -> None:
    """The row and its snapshots; clones of it keep no dangling reference."""
    t.execute("UPDATE volumes SET parent_id = NULL, parent_snapshot_id = NULL WHERE parent_id = ?", (vid,))
    t.execute("DELETE FROM snapshots WHERE volume_id = ?", (vid,))
    t.execute("DELETE FROM volumes WHERE id = ?", (vid,))


def children(t, vid: str) -> list[dict]:
    return t.execute("SELECT id, name FROM volumes WHERE parent_id = ? ORDER BY name", (vid,)).all()


def clones_of_snapshot(t, snapshot_id: str) -> list[dict]:
    return t.execute("SELECT id, name FROM volumes WHERE parent_snapshot_id = ? ORDER BY name", (snapshot_id,)).all()


def ready_using_chap(t, users) -> list[str]:
    """Ready volumes whose credentials include one of ``users``."""
    out = []
    for user in users:
        out += [r["id"] for r in t.execute("SELECT id FROM volumes WHERE state = 'ready' AND "
                                           "(chap_user = ? OR chap_mutual_user = ?)", (user, user)).all()]
    return out


def follow_tenant_chap(t, tenant_id: str, chap_user: Optional[str], chap_mutual_user: Optional[str]) -> None:
    """Volumes on their tenant's CHAP follow its new credentials; volumes without CHAP gain them."""
    t.execute("UPDATE volumes SET chap_source = ?, chap_user = ?, chap_mutual_user = ? "
              "WHERE tenant_id = ? AND chap_source IN ('tenant', 'none')",
              ("tenant" if chap_user else "none", chap_user, chap_mutual_user, tenant_id))


def ready_following_tenant(t, tenant_id: str) -> list[str]:
    """Ready volumes that take their CHAP or their ACL from the tenant."""
    return [r["id"] for r in t.execute(
        "SELECT id FROM volumes WHERE tenant_id = ? AND state = 'ready' AND "
        "(chap_source = 'tenant' OR chap_source = 'none' OR initiators IS NULL)", (tenant_id,)).all()]


def _filter(tenant_id: str, prefix: Optional[str], vmid: Optional[int], tag: Optional[str]) -> tuple[str, list]:
    where = " WHERE v.tenant_id = ? AND v.state <> 'deleting'"
    params: list[Any] = [tenant_id]
    if prefix:
        where += " AND substr(v.name, 1, ?) = ?"
        params += [len(prefix), prefix]
    if vmid is not None:
        where += " AND v.vmid = ?"
        params.append(vmid)
    if tag:
        where += " AND v.tags LIKE ?"  # tags are a JSON list of strings without quotes or wildcards
        params.append('%' + json.dumps(tag) + '%')
    return where, params


def summaries_json(t, pg: bool, tenant_id: str, prefix=None, vmid=None, tag=None) -> str:
    """The summaries of a tenant's volumes (by name) as one JSON array."""
    where, params = _filter(tenant_id, prefix, vmid, tag)
    rows = t.execute("SELECT " + _SUMMARY[pg] + " AS j FROM volumes v LEFT JOIN pools pl ON pl.id = v.pool_id "
                     "LEFT JOIN volumes p ON p.id = v.parent_id LEFT JOIN snapshots s ON s.id = v.parent_snapshot_id"
                     + where + " ORDER BY v.name", params).rows()
    return "[" + ",".join([r["j"] for r in rows]) + "]"


def listed(t, tenant_id: str, prefix=None, vmid=None, tag=None) -> list[dict]:
    """Full rows (``SELECT``) of a tenant's volumes, by name."""
    where, params = _filter(tenant_id, prefix, vmid, tag)
    return t.execute(SELECT + where + " ORDER BY v.name", params).all()


def allocation_in_pool(t, pool_id: str) -> dict[str, Optional[int]]:
    """Ready volumes of a pool and the allocated bytes last measured (None: never)."""
    return {r["id"]: r["allocated_bytes"] for r in t.execute(
        "SELECT id, allocated_bytes FROM volumes WHERE pool_id = ? AND state = 'ready'", (pool_id,)).all()}


def set_allocated(t, vid: str, allocated: int) -> None:
    t.execute("UPDATE volumes SET allocated_bytes = ? WHERE id = ?", (allocated, vid))


def backfill_iqns(t, prefix: str) -> None:
    """Rows of releases before schema 2 get the IQN they were exported under: prefix:tenant.id."""
    t.execute("UPDATE volumes SET iqn = ? || (SELECT replace(name, '_', '-') FROM tenants WHERE tenants.id = volumes.tenant_id) "
              "|| '.' || id WHERE iqn IS NULL", (prefix,))


def with_plaintext_chap(t) -> list[dict]:
    """Volumes of releases before schema 2 with their own CHAP as plain JSON, oldest first."""
    return t.execute("SELECT v.id, v.name, v.tenant_id, v.chap, t.name AS tenant FROM volumes v JOIN tenants t "
                     "ON t.id = v.tenant_id WHERE v.chap IS NOT NULL ORDER BY v.created_at, v.id").all()


def drop_plaintext_chap(t, vid: str, chap_user: str, chap_mutual_user: Optional[str]) -> None:
    t.execute("UPDATE volumes SET chap = NULL, chap_user = ?, chap_mutual_user = ? WHERE id = ?",
              (chap_user, chap_mutual_user, vid))


def take_tenant_chap(t) -> None:
    """Volumes on tenant CHAP get their tenant's account names (schema 2 upgrade)."""
    t.execute("UPDATE volumes SET chap_user = (SELECT chap_user FROM tenants WHERE tenants.id = volumes.tenant_id), "
              "chap_mutual_user = (SELECT chap_mutual_user FROM tenants WHERE tenants.id = volumes.tenant_id) "
              "WHERE chap_source = 'tenant'")


# ------------------------------------------------------------------------------ snapshots
def snapshot(t, vid: str, name: str) -> Optional[dict]:
    return t.execute("SELECT * FROM snapshots WHERE volume_id = ? AND name = ?", (vid, name)).one()


def snapshot_by_id(t, sid: str) -> Optional[dict]:
    return t.execute("SELECT * FROM snapshots WHERE id = ?", (sid,)).one()


def insert_snapshot(t, sid: str, vid: str, name: str, created_at: str) -> None:
    t.execute("INSERT INTO snapshots (id, volume_id, name, state, created_at) VALUES (?,?,?,'creating',?)",
              (sid, vid, name, created_at))


def set_snapshot_state(t, sid: str, state: str) -> None:
    t.execute("UPDATE snapshots SET state = ? WHERE id = ?", (state, sid))


def delete_snapshot(t, sid: str) -> None:
    t.execute("DELETE FROM snapshots WHERE id = ?", (sid,))


def ready_snapshots(t, vid: str) -> list[dict]:
    return t.execute("SELECT * FROM snapshots WHERE volume_id = ? AND state = 'ready' ORDER BY created_at, name", (vid,)).all()


def unfinished_snapshots(t) -> list[dict]:
    """Snapshots left 'creating' or 'deleting' by a crash, with their volume's pool."""
    return t.execute("SELECT s.*, v.pool_id FROM snapshots s JOIN volumes v ON v.id = s.volume_id WHERE s.state <> 'ready'").all()
