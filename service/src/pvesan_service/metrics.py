"""Prometheus metrics of one service instance (own registry: tests run several instances)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Counters and latencies of operations, and gauges read at scrape time from the providers
    ``watch`` is given: ``usage_by_tenant()`` (tenant, volumes, provisioned_bytes, allocated_bytes),
    ``pool_capacities()`` (name, total, used, available, provisioned, allocated, usable,
    subscription, alarm) and ``target_up()``."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.ops = Counter("pvesan_operations_total", "Service operations by outcome",
                           ["operation", "outcome"], registry=self.registry)
        self.latency = Histogram("pvesan_operation_seconds", "Latency of service operations",
                                 ["operation"], buckets=BUCKETS, registry=self.registry)
        self.reconciles = Counter("pvesan_reconcile_runs_total", "Reconciler runs", ["reason"], registry=self.registry)
        self.repairs = Counter("pvesan_reconcile_repairs_total", "Repairs made by the reconciler", ["kind"],
                               registry=self.registry)

    def watch(self, usage_by_tenant: Callable[[], list], pool_capacities: Callable[[], list],
              target_up: Callable[[], bool]) -> None:
        self.registry.register(_StateCollector(usage_by_tenant, pool_capacities, target_up))

    @contextmanager
    def measure(self, operation: str):
        start = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        except Exception as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self.ops.labels(operation, outcome).inc()
            self.latency.labels(operation).observe(time.perf_counter() - start)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    """Volumes, bytes and pool capacity, read at scrape time from the (cached) service state."""

    def __init__(self, usage_by_tenant, pool_capacities, target_up):
        self.usage_by_tenant = usage_by_tenant
        self.pool_capacities = pool_capacities
        self.target_up = target_up

    def describe(self):
        return []

    def collect(self):
        vols = GaugeMetricFamily("pvesan_volumes", "Volumes per tenant", labels=["tenant"])
        size = GaugeMetricFamily("pvesan_volume_provisioned_bytes", "Provisioned bytes per tenant", labels=["tenant"])
        allocated = GaugeMetricFamily("pvesan_volume_allocated_bytes",
                                      "Bytes the volumes of a tenant take in their pools (as last measured)", labels=["tenant"])
        for row in self.usage_by_tenant():
            vols.add_metric([row["tenant"]], row["volumes"])
            size.add_metric([row["tenant"]], row["provisioned_bytes"])
            allocated.add_metric([row["tenant"]], row["allocated_bytes"])
        cap = GaugeMetricFamily("pvesan_pool_bytes", "Pool capacity in bytes", labels=["pool", "kind"])
        subscription = GaugeMetricFamily("pvesan_pool_subscription", "Provisioned bytes per usable byte of a pool",
                                         labels=["pool"])
        alarm = GaugeMetricFamily("pvesan_pool_alarm", "Alarm level of a pool's fill: 0 none, 1 warning, 2 critical",
                                  labels=["pool"])
        for pool in self.pool_capacities():
            for kind in ("total", "used", "available", "provisioned", "allocated", "usable"):
                if pool.get(kind) is not None:
                    cap.add_metric([pool["name"], kind], pool[kind])
            if pool.get("subscription") is not None:
                subscription.add_metric([pool["name"]], pool["subscription"])
            alarm.add_metric([pool["name"]], pool["alarm"])
        up = GaugeMetricFamily("pvesan_target_up", "1 when the iSCSI target daemon answers")
        up.add_metric([], 1 if self.target_up() else 0)
        yield vols
        yield size
        yield allocated
        yield cap
        yield subscription
        yield alarm
        yield up
