"""Make the target and the pools match the database (the source of truth).

Runs at start-up (crash recovery), whenever the target daemon comes back after being down or
restarted, and on demand (``POST /api/v1/reconcile``).  It:
1. undoes creates that never committed (rows ``creating``) and finishes deletes (rows
   ``deleting``), for volumes and snapshots;
2. exports every ``ready`` volume the target lacks (or has with another backing path) and removes
   targets under our IQN prefix that no volume owns;
3. deletes backing volumes named like ours (``v-<hex>``) that no row owns.
Rows of other tenants' volumes are never touched by request handlers while this runs: every
repair takes the volume's lock.
"""
from __future__ import annotations

import logging
import re
import threading
import time

from .backends.base import NotFound as BackendNotFound

log = logging.getLogger("pvesan.reconciler")
OUR_VOLUME = re.compile(r"^v-[0-9a-f]{16}$")


def reconcile(service, reason: str = "manual") -> dict:
    """One full pass; returns counts of what it repaired."""
    s = service
    s.metrics.reconciles.labels(reason).inc()
    fixed = {"undone_creates": 0, "finished_deletes": 0, "exported": 0, "unexported": 0, "orphan_volumes": 0,
             "snapshots": 0, "missing_backing": 0}
    with s.store.tx() as t:
        pending = t.execute(s._VOL_SELECT + "WHERE v.state IN ('creating', 'deleting')").all()
    for vol in pending:
        with s.locks.hold(vol["id"]):
            fresh = s._volume_by_id(vol["id"])
            if not fresh or fresh["state"] not in ("creating", "deleting"):
                continue
            if fresh["state"] == "creating":
                s.undo_create(fresh["id"])
                fixed["undone_creates"] += 1
            else:
                s.delete_row_and_storage(fresh)
                fixed["finished_deletes"] += 1
            s._invalidate_usage(fresh["tenant_id"])

    with s.store.tx() as t:
        snaps = t.execute("SELECT s.*, v.pool_id FROM snapshots s JOIN volumes v ON v.id = s.volume_id "
                          "WHERE s.state <> 'ready'").all()
    for snap in snaps:
        with s.locks.hold(snap["volume_id"]):
            s.backend(s._pool_by_id(snap["pool_id"])).snapshot_delete(snap["volume_id"], snap["id"])
            with s.store.tx() as t:
                t.execute("DELETE FROM snapshots WHERE id = ?", (snap["id"],))
            fixed["snapshots"] += 1

    with s.store.tx() as t:
        ready = t.execute(s._VOL_SELECT + "WHERE v.state = 'ready'").all()
    with s._tlock:
        actual = s.target.list_exports()
    wanted = {}
    for vol in ready:
        wanted[vol["iqn"]] = vol
    prefix = s.iqn_prefix + ":"
    for iqn in actual:
        if iqn.startswith(prefix) and iqn not in wanted:
            s._unexport(iqn)
            fixed["unexported"] += 1
    for iqn, vol in wanted.items():
        have = actual.get(iqn)
        if have is not None and have.backing_path == vol["backing_path"]:
            continue
        with s.locks.hold(vol["id"]):
            fresh = s._volume_by_id(vol["id"])
            if not fresh or fresh["state"] != "ready":
                continue
            backend = s.backend(s._pool_by_id(fresh["pool_id"]))
            if not backend.exists(fresh["id"]):
                # data gone from the pool: nothing to export; say so loudly, keep the row for the admin
                log.error("volume %s (%s/%s) has no backing volume in its pool", fresh["id"], fresh["tenant"], fresh["name"])
                fixed["missing_backing"] += 1
                continue
            s._export(fresh)
            fixed["exported"] += 1

    known = {vol["id"] for vol in ready}
    with s.store.tx() as t:
        known |= {r["id"] for r in t.execute("SELECT id FROM volumes").all()}
    for pool in s._pool_rows():
        try:
            names = s.backend(pool).list_volumes()
        except Exception as exc:  # one broken pool must not stop the rest
            log.error("cannot list pool %s: %s", pool["name"], exc)
            continue
        for name in names:
            if OUR_VOLUME.match(name) and name not in known:
                with s.locks.hold(name):
                    with s.store.tx() as t:
                        if t.execute("SELECT id FROM volumes WHERE id = ?", (name,)).one():
                            continue  # created meanwhile
                    try:
                        s.backend(pool).delete(name)
                    except BackendNotFound:
                        pass
                    fixed["orphan_volumes"] += 1
    for kind, n in fixed.items():
        if n:
            s.metrics.repairs.labels(kind).inc(n)
    log.info("reconcile (%s): %s", reason, fixed)
    return fixed


class Reconciler:
    """Background thread: watches the target daemon and reconciles after it was down/restarted."""

    def __init__(self, service, interval: float = 5.0, full_interval: float = 600.0):
        self.service = service
        self.interval = interval
        self.full_interval = full_interval  # also repair drift nobody signalled (a target removed by hand)
        self._last_full = time.monotonic()
        self._stop = threading.Event()
        self._thread = None
        self.runs = 0
        self._last_gen = self._generation()

    def _generation(self):
        return getattr(self.service.target, "generation", None)

    def check(self) -> bool:
        """One watch step; returns True when it reconciled."""
        s = self.service
        with s._tlock:
            up = s.target.alive()
            gen = self._generation()
        was_up = s.target_up
        s.target_up = up
        if up and (not was_up or gen != self._last_gen):
            reason = "target_restart"
        elif up and time.monotonic() - self._last_full >= self.full_interval:
            reason = "periodic"
        else:
            return False
        self._last_gen = gen
        self._last_full = time.monotonic()
        reconcile(s, reason)
        self.runs += 1
        return True

    def start(self) -> None:
        self._last_gen = self._generation()  # the start-up reconcile already matched this instance
        self._thread = threading.Thread(target=self._loop, name="pvesan-reconciler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # keep watching; the next pass retries
                log.exception("reconciler pass failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
