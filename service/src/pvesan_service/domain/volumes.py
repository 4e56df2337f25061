"""Volumes: create, read, change and delete, each two-phase, and their repair after a crash.

The database is the source of truth.  Every operation that changes storage is two-phase:
1. a row is committed in a transitional state (``creating`` / ``deleting``);
2. the backend and the target are changed, then the row is committed ``ready`` (or removed).
A crash between the two leaves a transitional row that the reconciler finishes or undoes, so
there is never an orphan backing volume or target, nor a ``ready`` volume without its export.

Operations on one volume are serialised by its lock; uniqueness of names is enforced by the
database (a concurrent create of the same name waits for the first and then sees it).
"""
from __future__ import annotations

import concurrent.futures
import logging
import re
import secrets
from contextlib import contextmanager
from typing import Callable, Iterable, Mapping, Optional

from .. import db
from ..backends import NotInPool, VolumeBackend
from ..errors import Conflict, Invalid, NotFound
from ..names import align_size, check_name, parse_size, vmid_of
from . import chap as chaps
from .exports import Exports
from .locks import KeyedLocks
from .pools import Pools, ServiceTypes
from .secretbox import SecretBox
from .tenants import Tenants

log = logging.getLogger("pvesan.volumes")
OUR_VOLUME = re.compile(r"^v-[0-9a-f]{16}$")  # backing volume ids the service makes


class Volumes:
    def __init__(self, store: db.Store, box: SecretBox, metrics, locks: KeyedLocks, pools: Pools,
                 service_types: ServiceTypes, tenants: Tenants, exports: Exports):
        self.store = store
        self.box = box
        self.metrics = metrics
        self.locks = locks
        self.pools = pools
        self.service_types = service_types
        self.tenants = tenants
        self.exports = exports
        # the durable commits of two-phase operations run here, beside the target's work
        self.committer = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="pvesan-commit")

    # -- reading ------------------------------------------------------------------------------
    def by_id(self, vid: str) -> Optional[dict]:
        with self.store.tx() as t:
            return db.volumes.by_id(t, vid)

    def find(self, tenant: dict, name: str) -> Optional[dict]:
        with self.store.tx() as t:
            return db.volumes.by_name(t, tenant["id"], name)

    def row(self, tenant: dict, name: str) -> dict:
        vol = self.find(tenant, name)
        if not vol or vol["state"] == "deleting":
            raise NotFound("volume %r not found" % name)
        return vol

    def _allocated(self, vol: dict) -> Optional[int]:
        try:
            return self.pools.backend_of(vol).allocated_bytes(vol["id"])
        except Exception:  # a pool that cannot tell (or is down) must not break a volume's show
            return None

    def view(self, vol: dict, allocated: bool = True) -> dict:
        """A volume as the API shows it.  ``allocated=False`` (lists) shows the allocated bytes
        last measured instead of asking the pool (one command per volume on zfs and lvmthin)."""
        return {
            "id": vol["id"], "name": vol["name"], "tenant": vol["tenant"], "pool": self.pools.by_id(vol["pool_id"])["name"],
            "service_type": vol["service_type"], "size": vol["size"], "allocated": self._allocated(vol) if allocated else vol["allocated_bytes"],
            "thin": bool(vol["thin"]), "block_size": vol["block_size"], "vmid": vol["vmid"], "tags": db.from_json(vol["tags"], []),
            "state": vol["state"], "parent": vol["parent"], "parent_snapshot": vol["parent_snapshot"],
            "export": self.exports.view(vol), "created_at": vol["created_at"], "updated_at": vol["updated_at"],
        }

    def get(self, tenant: dict, name: str) -> dict:
        return self.view(self.row(tenant, name))

    def summaries_json(self, tenant: dict, prefix: Optional[str] = None, vmid: Optional[int] = None,
                       tag: Optional[str] = None) -> str:
        """A tenant's volume summaries as one JSON array, made by the database (what the API
        sends as is: 5,000 of them in well under 100 ms)."""
        with self.store.tx() as t:
            return db.volumes.summaries_json(t, self.store.pg, tenant["id"], prefix, vmid, tag)

    def list_(self, tenant: dict, prefix: Optional[str] = None, vmid: Optional[int] = None,
              tag: Optional[str] = None, detail: bool = False) -> list[dict]:
        """Volumes of a tenant, by name: summaries, or with ``detail`` full objects with the export."""
        if not detail:
            return db.from_json(self.summaries_json(tenant, prefix, vmid, tag))
        with self.store.tx() as t:
            rows = db.volumes.listed(t, tenant["id"], prefix, vmid, tag)
        return [self.view(r, allocated=False) for r in rows]

    @contextmanager
    def locked(self, tenant: dict, name: str):
        """Hold the volume's lock and yield its fresh row (404 if it went away meanwhile)."""
        vol = self.row(tenant, name)
        with self.locks.hold(vol["id"]):
            fresh = self.by_id(vol["id"])
            if not fresh or fresh["state"] != "ready" or fresh["name"] != name:
                if fresh and fresh["state"] == "creating":
                    raise Conflict("volume %r is still being created" % name)
                raise NotFound("volume %r not found" % name)
            yield fresh

    def refresh_allocated(self) -> int:
        """Measure the allocated bytes of every ready volume, one backend query per pool, and
        store those that changed (pool subscription, tenant usage and lists read them); returns
        how many changed.  A pool that cannot be read keeps its last figures."""
        changed = 0
        for pool in self.pools.rows():
            with self.store.tx() as t:
                known = db.volumes.allocation_in_pool(t, pool["id"])
            if not known:
                continue
            try:
                now = self.pools.backend(pool).allocated_map(known)
            except Exception as exc:
                log.warning("allocated bytes of pool %s not measured: %s", pool["name"], exc)
                continue
            fresh = {vid: n for vid, n in now.items() if known.get(vid) != n}
            if fresh:
                with self.store.tx(durable=False) as t:  # a figure lost in a power cut is measured again
                    for vid, n in fresh.items():
                        db.volumes.set_allocated(t, vid, n)
                changed += len(fresh)
        return changed

    # -- create -------------------------------------------------------------------------------
    def create(self, tenant: dict, name: str, size, service_type: Optional[str] = None,
               query_include: Optional[list] = None, query_exclude: Optional[list] = None,
               tags: Optional[list] = None, initiators: Optional[list] = None,
               chap: Optional[Mapping] = None) -> tuple[dict, bool]:
        """Create and export a volume; returns (volume, created).  Repeating the same create
        returns the existing volume (created=False); a different one under the same name is a 409.
        CHAP: the request's own (``{}``: generated), else the tenant's, else generated when the
        service type asks for CHAP."""
        with self.metrics.measure("volume_create"):
            check_name(name, "volume name")
            size = align_size(parse_size(size))
            st = self.service_types.resolve(service_type)
            own = None if chap is None else chaps.resolve(chap)
            acl = None if initiators is None else db.to_json(self.exports.acl(initiators))
            vid = "v-" + secrets.token_hex(8)
            with self.locks.hold(vid):
                while True:
                    existing = self.find(tenant, name)
                    if existing is None:
                        pool = self.pools.pick(st, query_include, query_exclude, size)
                        tenant_row = self.tenants.row(tenant["name"])
                        if own is None and not tenant_row["chap_user"] and st["chap"]:
                            own = chaps.resolve(chaps.GENERATE)
                        if own:
                            source, users = "volume", (own.user, own.mutual_user)
                        elif tenant_row["chap_user"]:
                            source, users = "tenant", (tenant_row["chap_user"], tenant_row["chap_mutual_user"])
                        else:
                            source, users = "none", (None, None)
                        backend = self.pools.backend(pool)
                        try:
                            with self.store.tx(durable=False) as t:
                                if own:
                                    chaps.claim(t, self.box, tenant["id"], own)
                                self.register(t, tenant_row, vid, name=name, pool_id=pool["id"], service_type=st["name"],
                                              size=size, thin=1 if st["thin"] else 0, block_size=st["block_size"],
                                              tags=db.to_json(tags or []), chap_source=source, chap_user=users[0],
                                              chap_mutual_user=users[1], initiators=acl, backing_path=backend.path(vid))
                        except db.UniqueViolation:
                            continue  # a concurrent create of the same name won: look again
                        break
                    if existing["state"] == "creating":
                        with self.locks.hold(existing["id"]):  # wait for the other create to finish
                            pass
                        existing = self.find(tenant, name)
                        if existing is None or existing["state"] == "creating":
                            continue
                    if existing["state"] == "deleting":
                        # a delete (or a failed create) that could not finish, e.g. while the target
                        # daemon was down: finish it now, then create anew
                        with self.locks.hold(existing["id"]):
                            fresh = self.by_id(existing["id"])
                            if fresh and fresh["state"] == "deleting":
                                self.remove(fresh)
                        continue
                    if existing["size"] != size or (service_type and existing["service_type"] != service_type) \
                            or existing["parent_id"] is not None:
                        raise Conflict("volume %r already exists with size %d, service type %s" %
                                       (name, existing["size"], existing["service_type"]))
                    return self.view(existing), False
                self.tenants.invalidate_usage(tenant["id"])
                return self.finish_create(vid, backend, lambda: backend.create(vid, size, bool(st["thin"]))), True

    def register(self, t, tenant_row: dict, vid: str, **columns) -> None:
        """Phase 1 of a create or clone, inside the caller's transaction: the quota and the pool
        allow the size, and the row is inserted as 'creating' (a UniqueViolation when the name is
        taken)."""
        self.tenants.check_quota(t, tenant_row, columns["size"])
        self.pools.admit(t, self.pools.by_id(columns["pool_id"]), columns["size"], bool(columns["thin"]))
        ts = db.now()
        row = dict(id=vid, tenant_id=tenant_row["id"], vmid=vmid_of(columns["name"]), iqn=self.exports.iqn(vid),
                   state="creating", created_at=ts, updated_at=ts, parent_id=None, parent_snapshot_id=None,
                   backing_path=None)
        row.update(columns)
        db.volumes.insert(t, **row)

    def finish_create(self, vid: str, backend: VolumeBackend, make: Callable[[], str]) -> dict:
        """Phase 2 of a create/clone (the volume lock is held): backing volume, export, commit."""
        commit = None
        try:
            path = make()
            vol = self.by_id(vid)
            vol["backing_path"] = path  # usually what backend.path() said at insert; the backend has the last word

            def ready():
                backend.flush(vid)  # the volume is on disk before the database says it is ready
                with self.store.tx() as t:
                    db.volumes.update(t, vid, state="ready", backing_path=path, updated_at=db.now())

            # The backing volume's flush and the durable 'ready' commit (two fsyncs) run while
            # the target exports: a crash in between leaves either a 'creating' volume, which the
            # reconciler removes, or a ready volume without export, which it exports at start-up;
            # the caller had no answer yet and a retried create returns the volume.
            commit = self.committer.submit(ready)
            self.exports.export(vol)
            commit.result()
        except BaseException:
            if commit is not None:
                concurrent.futures.wait([commit])
            self.undo_create(vid)
            raise
        return self.view(self.by_id(vid))

    def undo_create(self, vid: str) -> None:
        """Remove a half-made volume as a delete does: the row is marked 'deleting' on disk before
        anything else (it may have been committed 'ready' meanwhile), so should a step fail the
        reconciler finishes the delete and never exports it; then export, backing volume, row.
        A target daemon that is not running holds no export: nothing to remove there."""
        vol = self.by_id(vid)
        if vol is None:
            return
        try:
            self.remove(vol)
        except Exception as exc:
            log.error("cleanup of half-created volume %s failed, the reconciler will finish it: %s", vid, exc)
        self.tenants.invalidate_usage(vol["tenant_id"])

    # -- change -------------------------------------------------------------------------------
    def resize(self, tenant: dict, name: str, size) -> dict:
        """Grow a volume.  The new size is written (quota and pool checked) before the backend
        grows, so concurrent grows cannot both pass the checks; a grow the backend refuses is
        undone, and one a crash interrupted is finished by repeating it."""
        with self.metrics.measure("volume_resize"):
            new = align_size(parse_size(size))
            with self.locked(tenant, name) as vol:
                if new < vol["size"]:
                    raise Invalid("shrinking is refused: volume %r is %d bytes, asked %d" % (name, vol["size"], new))
                backend = self.pools.backend_of(vol)
                if new > vol["size"]:
                    tenant_row = self.tenants.row(tenant["name"])
                    with self.store.tx() as t:
                        self.tenants.check_quota(t, tenant_row, new - vol["size"])
                        self.pools.admit(t, self.pools.by_id(vol["pool_id"]), new - vol["size"], bool(vol["thin"]))
                        db.volumes.update(t, vol["id"], size=new, updated_at=db.now())
                    self.tenants.invalidate_usage(tenant["id"])
                elif backend.size(vol["id"]) >= new:
                    return self.view(vol)
                try:
                    backend.resize(vol["id"], new)
                except BaseException:
                    with self.store.tx() as t:
                        db.volumes.update(t, vol["id"], size=vol["size"], updated_at=db.now())
                    self.tenants.invalidate_usage(tenant["id"])
                    raise
                self.exports.refresh_size(vol["iqn"])
                return self.view(self.by_id(vol["id"]))

    def reclaim(self, tenant: dict, name: str) -> dict:
        """Free the all-zero ranges of a thin volume while it stays in use (where the backend can
        do that safely); returns the bytes freed and the volume as it is now."""
        with self.metrics.measure("volume_reclaim"):
            with self.locked(tenant, name) as vol:
                if not vol["thin"]:
                    raise Conflict("volume %r is thick: it keeps all its bytes allocated" % name)
                freed = self.pools.backend_of(vol).reclaim(vol["id"])
                view = self.view(vol)
                if view["allocated"] is not None:
                    with self.store.tx(durable=False) as t:
                        db.volumes.set_allocated(t, vol["id"], view["allocated"])
                self.pools.forget_capacity(vol["pool_id"])
                log.info("reclaim of %s/%s freed %d bytes", tenant["name"], name, freed)
                return {"reclaimed": freed, "volume": view}

    def rename(self, tenant: dict, name: str, new_name: str) -> dict:
        with self.metrics.measure("volume_rename"):
            check_name(new_name, "volume name")
            with self.locked(tenant, name) as vol:
                if new_name != name:
                    try:
                        with self.store.tx() as t:
                            db.volumes.update(t, vol["id"], name=new_name, vmid=vmid_of(new_name), updated_at=db.now())
                    except db.UniqueViolation:
                        raise Conflict("volume %r already exists" % new_name) from None
                return self.view(self.by_id(vol["id"]))

    def update(self, tenant: dict, name: str, changes: dict) -> dict:
        """Tags, initiator ACL, per-volume CHAP (``chap: null`` falls back to the tenant's; a new
        secret for the volume's own user is a rotation: every volume using that user follows)."""
        with self.metrics.measure("volume_update"):
            with self.locked(tenant, name) as vol:
                fields, rotated = {}, []
                if "tags" in changes:
                    fields["tags"] = db.to_json(changes["tags"] or [])
                if "initiators" in changes:
                    fields["initiators"] = None if changes["initiators"] is None else db.to_json(self.exports.acl(changes["initiators"]))
                if "chap" in changes:
                    if changes["chap"] is None:
                        tenant_row = self.tenants.row(tenant["name"])
                        fields.update(chap_source="tenant" if tenant_row["chap_user"] else "none",
                                      chap_user=tenant_row["chap_user"], chap_mutual_user=tenant_row["chap_mutual_user"])
                    else:
                        current = self.exports.chap_of(vol) if vol["chap_source"] == "volume" else None
                        cred = chaps.resolve(changes["chap"], current)
                        fields.update(chap_source="volume", chap_user=cred.user, chap_mutual_user=cred.mutual_user)
                with self.store.tx() as t:
                    if "chap" in changes and changes["chap"] is not None:
                        rotated = chaps.claim(t, self.box, tenant["id"], cred, rotate=True)
                    if fields:
                        db.volumes.update(t, vol["id"], updated_at=db.now(), **fields)
                    if "chap" in changes:
                        db.chap_accounts.release(t, (vol["chap_user"], vol["chap_mutual_user"]))
                    others = [v for v in db.volumes.ready_using_chap(t, rotated) if v != vol["id"]]
                vol = self.by_id(vol["id"])
                if "initiators" in changes or "chap" in changes:
                    self.exports.export(vol)
            self.reexport(others)
            return self.view(vol)

    def reexport(self, vids: Iterable[str]) -> None:
        """Export volumes again (their credentials or ACL changed), each under its own lock."""
        for vid in dict.fromkeys(vids):
            with self.locks.hold(vid):
                vol = self.by_id(vid)
                if vol and vol["state"] == "ready":
                    self.exports.export(vol)

    # -- delete -------------------------------------------------------------------------------
    def delete(self, tenant: dict, name: str, cascade: bool = False) -> None:
        with self.metrics.measure("volume_delete"):
            with self.locked(tenant, name) as vol:
                self.delete_locked(vol, cascade)
            self.tenants.invalidate_usage(tenant["id"])

    def delete_locked(self, vol: dict, cascade: bool) -> None:
        """Delete a volume whose lock the caller holds, with its clones when ``cascade``."""
        with self.store.tx() as t:
            children = db.volumes.children(t, vol["id"])
        if children and not cascade:
            raise Conflict("volume %r has dependent clones (%s): delete them first or pass cascade=true"
                           % (vol["name"], ", ".join(c["name"] for c in children)))
        self.delete_clones(children)
        self.remove(vol)

    def delete_clones(self, clones: list[dict]) -> None:
        for clone in clones:
            with self.locks.hold(clone["id"]):
                fresh = self.by_id(clone["id"])
                if fresh:
                    self.delete_locked(fresh, True)

    def remove(self, vol: dict) -> None:
        """Two-phase delete: mark 'deleting' (on disk before any data is destroyed), remove export
        and backing volume, drop the rows (not flushed on its own: should a power cut lose it, the
        row is still 'deleting' and the reconciler finishes the delete)."""
        def mark():
            with self.store.tx() as t:
                db.volumes.update(t, vol["id"], state="deleting", updated_at=db.now())

        # The export goes while the mark is flushed: a power cut in between leaves a 'ready'
        # volume without export, which the reconciler exports again; data waits for the mark.
        marked = self.committer.submit(mark)
        try:
            self.exports.unexport(vol["iqn"])
        finally:
            marked.result()
        self.pools.backend_of(vol).delete(vol["id"])
        with self.store.tx(durable=False) as t:
            db.volumes.delete(t, vol["id"])
            db.chap_accounts.release(t, (vol["chap_user"], vol["chap_mutual_user"]))

    # -- repair (the reconciler) --------------------------------------------------------------
    def finish_pending(self) -> tuple[int, int]:
        """Undo creates that never committed, finish deletes; returns (undone, finished)."""
        undone = finished = 0
        with self.store.tx() as t:
            pending = db.volumes.in_state(t, "creating", "deleting")
        for vol in pending:
            with self.locks.hold(vol["id"]):
                fresh = self.by_id(vol["id"])
                if not fresh or fresh["state"] not in ("creating", "deleting"):
                    continue
                if fresh["state"] == "creating":
                    self.undo_create(fresh["id"])
                    undone += 1
                else:
                    self.remove(fresh)
                    finished += 1
                self.tenants.invalidate_usage(fresh["tenant_id"])
        return undone, finished

    def repair_exports(self) -> dict:
        """Export every ready volume the target lacks, or has with another backing path or thin
        provisioning setting (existing volumes get UNMAP this way), and remove targets under our
        IQN prefix that no volume owns."""
        fixed = {"exported": 0, "unexported": 0, "missing_backing": 0}
        with self.store.tx() as t:
            ready = db.volumes.in_state(t, "ready")
        actual = self.exports.actual()
        wanted = {vol["iqn"]: vol for vol in ready}
        prefix = self.exports.iqn_prefix + ":"
        for iqn in actual:
            if iqn.startswith(prefix) and iqn not in wanted:
                self.exports.unexport(iqn)
                fixed["unexported"] += 1
        for iqn, vol in wanted.items():
            have = actual.get(iqn)
            if have is not None and have.backing_path == vol["backing_path"] and have.thin == self.exports.thin_of(vol):
                continue
            with self.locks.hold(vol["id"]):
                fresh = self.by_id(vol["id"])
                if not fresh or fresh["state"] != "ready":
                    continue
                if not self.pools.backend_of(fresh).exists(fresh["id"]):
                    # data gone from the pool: nothing to export; say so loudly, keep the row for the admin
                    log.error("volume %s (%s/%s) has no backing volume in its pool", fresh["id"], fresh["tenant"], fresh["name"])
                    fixed["missing_backing"] += 1
                    continue
                self.exports.export(fresh)
                fixed["exported"] += 1
        return fixed

    def remove_orphans(self) -> int:
        """Delete backing volumes named like ours that no row owns; returns how many."""
        removed = 0
        with self.store.tx() as t:
            known = db.volumes.all_ids(t)
        for pool in self.pools.rows():
            try:
                names = self.pools.backend(pool).list_volumes()
            except Exception as exc:  # one broken pool must not stop the rest
                log.error("cannot list pool %s: %s", pool["name"], exc)
                continue
            for name in names:
                if not OUR_VOLUME.match(name) or name in known:
                    continue
                with self.locks.hold(name):
                    with self.store.tx() as t:
                        if db.volumes.exists(t, name):
                            continue  # created meanwhile
                    try:
                        self.pools.backend(pool).delete(name)
                    except NotInPool:
                        pass
                    removed += 1
        return removed
