"""State store: the database is the source of truth of the service.

SQLite (WAL) is the embedded default; PostgreSQL is used when the URL says so (several service
instances can then share one database).  Plain DB-API with ``?`` placeholders (rewritten to
``%s`` for psycopg) keeps one set of SQL for both.  The schema is versioned from the first release:
``MIGRATIONS`` is an append-only list; ``schema_migrations`` records what ran.
"""
from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
import threading
from typing import Any, Iterator
from urllib.parse import urlparse, unquote


class StoreError(Exception):
    """The database is unusable (bad URL, unreachable server, newer schema)."""


class UniqueViolation(Exception):
    """An INSERT/UPDATE hit a unique constraint (a concurrent create of the same name)."""


# Append-only: never edit a released entry, add a new one.  Types used are understood by both
# SQLite and PostgreSQL; booleans are 0/1 integers, JSON is text, times are ISO-8601 text.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "initial schema", [
        """CREATE TABLE tenants (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            chap TEXT,
            initiators TEXT NOT NULL DEFAULT '[]',
            quota_bytes BIGINT,
            created_at TEXT NOT NULL)""",
        """CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            tenant_id TEXT REFERENCES tenants(id),
            name TEXT NOT NULL,
            hash TEXT NOT NULL,
            readonly INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL)""",
        "CREATE INDEX tokens_tenant ON tokens(tenant_id)",
        """CREATE TABLE pools (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            options TEXT NOT NULL DEFAULT '{}',
            tags TEXT NOT NULL DEFAULT '[]',
            created_at TEXT NOT NULL)""",
        """CREATE TABLE service_types (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL DEFAULT '',
            pool_tags TEXT NOT NULL DEFAULT '[]',
            block_size INTEGER NOT NULL DEFAULT 512,
            thin INTEGER NOT NULL DEFAULT 1,
            chap INTEGER NOT NULL DEFAULT 0,
            is_default INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL)""",
        """CREATE TABLE volumes (
            id TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            name TEXT NOT NULL,
            pool_id TEXT NOT NULL REFERENCES pools(id),
            service_type TEXT,
            size BIGINT NOT NULL,
            thin INTEGER NOT NULL,
            block_size INTEGER NOT NULL,
            vmid INTEGER,
            tags TEXT NOT NULL DEFAULT '[]',
            chap TEXT,
            chap_source TEXT NOT NULL DEFAULT 'none',
            initiators TEXT,
            parent_id TEXT,
            parent_snapshot_id TEXT,
            backing_path TEXT,
            state TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (tenant_id, name))""",
        "CREATE INDEX volumes_parent ON volumes(parent_id)",
        "CREATE INDEX volumes_state ON volumes(state)",
        "CREATE INDEX volumes_pool ON volumes(pool_id)",
        """CREATE TABLE snapshots (
            id TEXT PRIMARY KEY,
            volume_id TEXT NOT NULL REFERENCES volumes(id),
            name TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (volume_id, name))""",
    ]),
    (2, "tenant isolation: CHAP accounts unique across tenants with sealed secrets, stored IQNs, explicit ACLs", [
        # tgtd keeps CHAP accounts in one namespace for all targets: a name belongs to one tenant
        """CREATE TABLE chap_accounts (
            username TEXT PRIMARY KEY,
            tenant_id TEXT NOT NULL REFERENCES tenants(id),
            secret TEXT NOT NULL,
            created_at TEXT NOT NULL)""",
        "CREATE INDEX chap_accounts_tenant ON chap_accounts(tenant_id)",
        "ALTER TABLE tenants ADD COLUMN chap_user TEXT REFERENCES chap_accounts(username)",
        "ALTER TABLE tenants ADD COLUMN chap_mutual_user TEXT REFERENCES chap_accounts(username)",
        # the effective credentials of a volume (its own, or its tenant's when chap_source = 'tenant')
        "ALTER TABLE volumes ADD COLUMN chap_user TEXT REFERENCES chap_accounts(username)",
        "ALTER TABLE volumes ADD COLUMN chap_mutual_user TEXT REFERENCES chap_accounts(username)",
        "CREATE INDEX volumes_chap_user ON volumes(chap_user)",
        "CREATE INDEX volumes_chap_mutual_user ON volumes(chap_mutual_user)",
        # IQNs are stored: new ones carry no tenant name, old ones never change
        "ALTER TABLE volumes ADD COLUMN iqn TEXT",
        "CREATE UNIQUE INDEX volumes_iqn ON volumes(iqn)",
        # an empty ACL used to mean "any initiator"; it now means none, and "ALL" says any
        "UPDATE tenants SET initiators = '[\"ALL\"]' WHERE initiators = '[]'",
        "UPDATE volumes SET initiators = '[\"ALL\"]' WHERE initiators = '[]'",
        "CREATE TABLE service_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


class Tx:
    """One transaction: ``execute`` then ``one``/``all``; committed when the block ends."""

    def __init__(self, conn, pg: bool):
        self._cur = conn.cursor()
        self._pg = pg

    def execute(self, sql: str, params: tuple | list = ()) -> "Tx":
        if self._pg:
            sql = sql.replace("?", "%s")
        try:
            self._cur.execute(sql, tuple(params))
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise UniqueViolation(str(exc)) from exc
            raise
        except Exception as exc:  # psycopg is optional: recognise its UniqueViolation by SQLSTATE
            if getattr(exc, "sqlstate", None) == "23505":
                raise UniqueViolation(str(exc)) from exc
            raise
        return self

    def one(self) -> dict[str, Any] | None:
        row = self._cur.fetchone()
        return None if row is None else dict(row)

    def all(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._cur.fetchall()]

    def rows(self) -> list:
        """Rows as the driver gives them (index them by column name); cheaper than ``all``."""
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


class Store:
    """Connections and transactions for SQLite or PostgreSQL."""

    def __init__(self, url: str, sqlite_synchronous: str = "FULL", pool_size: int = 8):
        self.url = url
        parsed = urlparse(url)
        self.pg = parsed.scheme in ("postgresql", "postgres")
        if self.pg:
            try:
                import psycopg  # noqa: F401  (optional dependency: extra "postgresql")
            except ImportError as exc:
                raise StoreError("PostgreSQL URL given but psycopg is missing: pip install 'pvesan-service[postgresql]'") from exc
            self._pool: queue.LifoQueue = queue.LifoQueue()
            self._pool_size = pool_size
            self._made = 0
            self._made_lock = threading.Lock()
        elif parsed.scheme == "sqlite":
            # SQLAlchemy convention: sqlite:///relative.db, sqlite:////absolute/path.db
            path = unquote(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else ""
            if not path:
                raise StoreError("sqlite URL needs a file path, e.g. sqlite:////var/lib/pvesan/state.db")
            self.path = path
            _private_files(path)
            try:
                self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            except sqlite3.Error as exc:
                raise StoreError("cannot open SQLite database %s: %s" % (path, exc)) from exc
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            if sqlite_synchronous.upper() not in ("FULL", "NORMAL"):
                raise StoreError("sqlite_synchronous must be FULL or NORMAL")
            self._sync = sqlite_synchronous.upper()
            self._durable = True
            self._conn.execute("PRAGMA synchronous=%s" % self._sync)
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._lock = threading.RLock()
        else:
            raise StoreError("unsupported database URL %r: use sqlite:////path/state.db or postgresql://user@host/db" % url)

    # -- connections ---------------------------------------------------------------------
    def _pg_get(self):
        import psycopg
        from psycopg.rows import dict_row
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            pass
        with self._made_lock:
            make = self._made < self._pool_size
            if make:
                self._made += 1
        if not make:
            return self._pool.get()
        try:
            return psycopg.connect(self.url, row_factory=dict_row, autocommit=False)
        except Exception as exc:
            with self._made_lock:
                self._made -= 1
            raise StoreError("cannot connect to PostgreSQL: %s" % exc) from exc

    @contextlib.contextmanager
    def tx(self, durable: bool = True) -> Iterator[Tx]:
        """A transaction: commit on success, roll back on any exception.

        ``durable=False`` is for the steps of a two-phase operation whose loss in a power cut the
        reconciler repairs (the ``creating`` mark of a create, the row removal that ends a
        delete): the commit is not flushed to disk on its own but by the next durable commit.
        This halves the fsyncs of a create or delete."""
        if self.pg:
            conn = self._pg_get()
            try:
                t = Tx(conn, True)
                if not durable:
                    t.execute("SET LOCAL synchronous_commit = off")
                yield t
                conn.commit()
            except BaseException:
                try:
                    conn.rollback()
                except Exception:  # broken connection: drop it
                    conn.close()
                    with self._made_lock:
                        self._made -= 1
                    raise
                raise
            finally:
                if not conn.closed:
                    self._pool.put(conn)
            return
        with self._lock:
            if durable != self._durable:  # per commit; cannot change inside a transaction
                self._conn.execute("PRAGMA synchronous=%s" % (self._sync if durable else "NORMAL"))
                self._durable = durable
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._conn, False)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        if self.pg:
            while True:
                try:
                    self._pool.get_nowait().close()
                except queue.Empty:
                    break
        else:
            self._conn.close()

    # -- migrations ----------------------------------------------------------------------
    def migrate(self) -> int:
        """Apply pending migrations; return the schema version.  Safe to run concurrently from
        several instances on PostgreSQL (an advisory lock serialises them)."""
        with self.tx() as t:
            if self.pg:
                t.execute("SELECT pg_advisory_xact_lock(7265636)")
            t.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                      "description TEXT NOT NULL, applied_at TEXT NOT NULL)")
            done = {r["version"] for r in t.execute("SELECT version FROM schema_migrations").all()}
            if done and max(done) > SCHEMA_VERSION:
                raise StoreError("database schema version %d is newer than this service (%d): upgrade pvesan-service"
                                 % (max(done), SCHEMA_VERSION))
            for version, description, statements in MIGRATIONS:
                if version in done:
                    continue
                for sql in statements:
                    t.execute(sql)
                t.execute("INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                          (version, description, now()))
        return SCHEMA_VERSION

    def version(self) -> int:
        with self.tx() as t:
            row = t.execute("SELECT MAX(version) AS v FROM schema_migrations").one()
        return int(row["v"] or 0)


def _private_files(path: str) -> None:
    """The database holds token hashes and sealed secrets: it and its WAL/shm files are the
    service's alone (0600), whatever the umask.  SQLite gives the WAL and shm files the mode of
    the database file, so creating that one 0600 is enough for new files; older ones are fixed."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        for suffix in ("", "-wal", "-shm", "-journal"):
            if os.path.exists(path + suffix) and os.stat(path + suffix).st_mode & 0o077:
                os.chmod(path + suffix, 0o600)
    except OSError as exc:
        raise StoreError("cannot create SQLite database %s: %s" % (path, exc.strerror)) from exc


def now() -> str:
    import datetime
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
