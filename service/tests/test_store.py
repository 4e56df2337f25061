"""State store on real SQLite and a real PostgreSQL server: migrations, transactions, uniqueness."""
from __future__ import annotations

import threading

import pytest

from pvesan_service.db import Store, StoreError, UniqueViolation
from pvesan_service.db.schema import MIGRATIONS, SCHEMA_VERSION


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "postgres":
        return request.getfixturevalue("pg_database")
    return "sqlite:///%s/state.db" % tmp_path


def test_migrations_apply_once_and_record_versions(url):
    store = Store(url)
    assert store.migrate() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION  # second run: nothing to do
    with store.tx() as t:
        rows = t.execute("SELECT version, description FROM schema_migrations ORDER BY version").all()
        assert [r["version"] for r in rows] == [m[0] for m in MIGRATIONS]
        t.execute("SELECT COUNT(*) AS n FROM volumes").one()
    store.close()


def test_newer_schema_is_refused(url):
    store = Store(url)
    store.migrate()
    with store.tx() as t:
        t.execute("INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                  (SCHEMA_VERSION + 1, "from the future", "now"))
    with pytest.raises(StoreError, match="newer than this service"):
        store.migrate()
    store.close()


def test_transactions_roll_back_and_unique_violations_are_typed(url):
    store = Store(url)
    store.migrate()
    with store.tx() as t:
        t.execute("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)", ("t1", "alpha", "now"))
    with pytest.raises(UniqueViolation):
        with store.tx() as t:
            t.execute("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)", ("t2", "alpha", "now"))
    with pytest.raises(RuntimeError):
        with store.tx() as t:
            t.execute("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)", ("t3", "beta", "now"))
            raise RuntimeError("boom")
    with store.tx() as t:
        assert [r["name"] for r in t.execute("SELECT name FROM tenants").all()] == ["alpha"]
    store.close()


def test_concurrent_writers_and_migrations(url):
    """Several instances migrating at once (PostgreSQL: several services share one database) and
    16 threads inserting: every row lands exactly once."""
    stores = [Store(url), Store(url), Store(url)]
    threads = [threading.Thread(target=s.migrate) for s in stores]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    store = stores[0]
    assert all(s.version() == SCHEMA_VERSION for s in stores)
    dup = []

    def writer(k):
        for i in range(20):
            try:
                with store.tx() as t:
                    t.execute("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)",
                              ("t-%d-%d" % (k, i), "n%d" % ((k * 20 + i) % 200), "now"))
            except UniqueViolation:
                dup.append(1)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    with store.tx() as t:
        assert t.execute("SELECT COUNT(*) AS n FROM tenants").one()["n"] == 200
    assert len(dup) == 16 * 20 - 200
    for s in stores:
        s.close()


def test_bad_urls_say_what_to_fix():
    with pytest.raises(StoreError, match="unsupported database URL"):
        Store("mysql://x")
    with pytest.raises(StoreError, match="file path"):
        Store("sqlite://")
