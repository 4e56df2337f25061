"""Make the target and the pools match the database (the source of truth).

Runs at start-up (crash recovery), whenever the target daemon comes back after being down or
restarted, and on demand (``POST /api/v1/reconcile``).  It:
1. undoes creates that never committed (rows ``creating``) and finishes deletes (rows
   ``deleting``), for volumes and snapshots;
2. exports every ``ready`` volume the target lacks (or has with another backing path) and removes
   targets under our IQN prefix that no volume owns;
3. deletes backing volumes named like ours (``v-<hex>``) that no row owns, and CHAP accounts that
   nothing uses.
Every repair is a public operation of the domain layer (domain/volumes.py, domain/snapshots.py)
and takes the volume's lock, so request handlers never see a half-repaired volume.
"""
from __future__ import annotations

import logging
import threading
import time

from . import db

log = logging.getLogger("pvesan.reconciler")


def reconcile(service, reason: str = "manual") -> dict:
    """One full pass of public domain operations; returns counts of what it repaired."""
    service.metrics.reconciles.labels(reason).inc()
    fixed = {"undone_creates": 0, "finished_deletes": 0, "exported": 0, "unexported": 0, "orphan_volumes": 0,
             "snapshots": 0, "missing_backing": 0, "chap_accounts": 0}
    fixed["undone_creates"], fixed["finished_deletes"] = service.volumes.finish_pending()
    fixed["snapshots"] = service.snapshots.finish_pending()
    fixed.update(service.volumes.repair_exports())
    fixed["orphan_volumes"] = service.volumes.remove_orphans()
    with service.store.tx() as t:  # accounts whose release a power cut lost
        fixed["chap_accounts"] = db.chap_accounts.release_unused(t)
    for kind, n in fixed.items():
        if n:
            service.metrics.repairs.labels(kind).inc(n)
    log.info("reconcile (%s): %s", reason, fixed)
    return fixed


class Reconciler:
    """Background thread: watches the target daemon and reconciles after it was down/restarted."""

    def __init__(self, service, interval: float = 5.0, full_interval: float = 600.0, allocation_interval: float = 30.0):
        self.service = service
        self.interval = interval
        self.full_interval = full_interval  # also repair drift nobody signalled (a target removed by hand)
        # how often the allocated bytes of volumes are measured and the pools' alarms looked at
        self.allocation_interval = allocation_interval
        self._last_full = time.monotonic()
        self._last_allocation = float("-inf")
        self._stop = threading.Event()
        self._thread = None
        self.runs = 0
        self._last_gen = self._generation()

    def _generation(self):
        return getattr(self.service.exports.target, "generation", None)

    def measure(self) -> None:
        """Allocated bytes of the volumes, and the pools' fill (which logs alarm crossings)."""
        self._last_allocation = time.monotonic()
        self.service.volumes.refresh_allocated()
        self.service.pools.alarms()

    def check(self) -> bool:
        """One watch step; returns True when it reconciled."""
        s = self.service
        if time.monotonic() - self._last_allocation >= self.allocation_interval:
            self.measure()
        up, gen = s.exports.watch()
        was_up = s.exports.up
        s.exports.up = up
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
