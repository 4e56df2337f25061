"""Snapshots of volumes, rollbacks to them, and clones made from them."""
from __future__ import annotations

import logging
import secrets
from typing import Optional

from .. import db
from ..errors import Conflict, NotFound
from ..names import check_name, check_snap_name
from .volumes import Volumes

log = logging.getLogger("pvesan.snapshots")
BASE_SNAPSHOT = "__base__"  # implicit snapshot for clones of a template (user names cannot start with _)


class Snapshots:
    def __init__(self, volumes: Volumes):
        self.volumes = volumes
        self.store = volumes.store
        self.metrics = volumes.metrics
        self.pools = volumes.pools

    @staticmethod
    def _out(row: dict, volume: str) -> dict:
        return {"name": row["name"], "id": row["id"], "volume": volume, "state": row["state"], "created_at": row["created_at"]}

    def _row(self, vol: dict, snap: str) -> dict:
        with self.store.tx() as t:
            row = db.volumes.snapshot(t, vol["id"], snap)
        if not row or row["state"] != "ready":
            raise NotFound("snapshot %r of volume %r not found" % (snap, vol["name"]))
        return row

    def create(self, tenant: dict, name: str, snap: str) -> tuple[dict, bool]:
        """Take snapshot ``snap``; returns (snapshot, created): an existing one is returned as is."""
        with self.metrics.measure("snapshot_create"):
            check_snap_name(snap)
            with self.volumes.locked(tenant, name) as vol:
                return self._create_locked(vol, snap)

    def _create_locked(self, vol: dict, snap: str) -> tuple[dict, bool]:
        with self.store.tx() as t:
            old = db.volumes.snapshot(t, vol["id"], snap)
        if old and old["state"] == "ready":
            return self._out(old, vol["name"]), False
        sid = old["id"] if old else "s-" + secrets.token_hex(8)
        if not old:
            with self.store.tx(durable=False) as t:
                db.volumes.insert_snapshot(t, sid, vol["id"], snap, db.now())
        backend = self.pools.backend_of(vol)
        try:
            backend.snapshot_create(vol["id"], sid)
        except BaseException:
            try:
                backend.snapshot_delete(vol["id"], sid)
                with self.store.tx() as t:
                    db.volumes.delete_snapshot(t, sid)
            except Exception as exc:
                log.error("cleanup of snapshot %s failed, the reconciler will retry: %s", sid, exc)
            raise
        with self.store.tx() as t:
            db.volumes.set_snapshot_state(t, sid, "ready")
            row = db.volumes.snapshot_by_id(t, sid)
        return self._out(row, vol["name"]), True

    def list_(self, tenant: dict, name: str) -> list[dict]:
        vol = self.volumes.row(tenant, name)
        with self.store.tx() as t:
            rows = db.volumes.ready_snapshots(t, vol["id"])
        return [self._out(r, name) for r in rows]

    def delete(self, tenant: dict, name: str, snap: str, cascade: bool = False) -> None:
        with self.metrics.measure("snapshot_delete"):
            with self.volumes.locked(tenant, name) as vol:
                row = self._row(vol, snap)
                with self.store.tx() as t:
                    clones = db.volumes.clones_of_snapshot(t, row["id"])
                if clones and not cascade:
                    raise Conflict("snapshot %r has dependent clones (%s): delete them first or pass cascade=true"
                                   % (snap, ", ".join(c["name"] for c in clones)))
                self.volumes.delete_clones(clones)
                self.volumes.tenants.invalidate_usage(tenant["id"])
                with self.store.tx() as t:
                    db.volumes.set_snapshot_state(t, row["id"], "deleting")
                self.pools.backend_of(vol).snapshot_delete(vol["id"], row["id"])
                with self.store.tx() as t:
                    db.volumes.delete_snapshot(t, row["id"])

    def rollback(self, tenant: dict, name: str, snap: str) -> dict:
        """Content back to the snapshot.  The export is taken down meanwhile so that no initiator
        (and no target cache) sees a half-rolled-back volume; initiators log in again after."""
        with self.metrics.measure("snapshot_rollback"):
            with self.volumes.locked(tenant, name) as vol:
                row = self._row(vol, snap)
                self.volumes.exports.unexport(vol["iqn"])
                try:
                    self.pools.backend_of(vol).snapshot_rollback(vol["id"], row["id"])
                finally:
                    self.volumes.exports.export(vol)
                return self.volumes.view(vol)

    def clone(self, tenant: dict, name: str, new_name: str, snapshot: Optional[str] = None,
              tags: Optional[list] = None) -> tuple[dict, bool]:
        """A new exported volume from a snapshot of ``name`` (thin where the backend allows).
        Without ``snapshot`` the clone is made from the volume's implicit base snapshot, which
        suits Proxmox templates (base volumes never change after they become a template)."""
        with self.metrics.measure("volume_clone"):
            check_name(new_name, "volume name")
            if snapshot is not None:
                check_snap_name(snapshot)
            vid = "v-" + secrets.token_hex(8)
            with self.volumes.locked(tenant, name) as src:
                existing = self.volumes.find(tenant, new_name)
                if existing:
                    if existing["parent_id"] == src["id"] and existing["parent_snapshot"] == (snapshot or BASE_SNAPSHOT) \
                            and existing["state"] == "ready":
                        return self.volumes.view(existing), False
                    raise Conflict("volume %r already exists" % new_name)
                snap_row = self._create_locked(src, BASE_SNAPSHOT)[0] if snapshot is None else self._row(src, snapshot)
                with self.volumes.locks.hold(vid):
                    tenant_row = self.volumes.tenants.row(tenant["name"])
                    try:
                        with self.store.tx(durable=False) as t:
                            # the clone uses the origin's credentials (accounts of the same tenant)
                            self.volumes.register(
                                t, tenant_row, vid, name=new_name, pool_id=src["pool_id"], service_type=src["service_type"],
                                size=src["size"], thin=src["thin"], block_size=src["block_size"],
                                tags=db.to_json(tags if tags is not None else db.from_json(src["tags"], [])),
                                chap_source=src["chap_source"], chap_user=src["chap_user"],
                                chap_mutual_user=src["chap_mutual_user"], initiators=src["initiators"],
                                parent_id=src["id"], parent_snapshot_id=snap_row["id"])
                    except db.UniqueViolation:
                        raise Conflict("volume %r already exists" % new_name) from None
                    self.volumes.tenants.invalidate_usage(tenant["id"])
                    backend = self.pools.backend_of(src)
                    return self.volumes.finish_create(vid, backend, lambda: backend.clone(src["id"], snap_row["id"], vid)), True

    # -- repair (the reconciler) --------------------------------------------------------------
    def finish_pending(self) -> int:
        """Remove snapshots a crash left 'creating' or 'deleting'; returns how many."""
        with self.store.tx() as t:
            snaps = db.volumes.unfinished_snapshots(t)
        for snap in snaps:
            with self.volumes.locks.hold(snap["volume_id"]):
                self.pools.backend(self.pools.by_id(snap["pool_id"])).snapshot_delete(snap["volume_id"], snap["id"])
                with self.store.tx() as t:
                    db.volumes.delete_snapshot(t, snap["id"])
        return len(snaps)
