"""Connections, transactions and migrations of the state store (the database is the source of truth).

SQLite (WAL) is the embedded default; PostgreSQL is used when the URL says so (several service
instances can then share one database).  Plain DB-API with ``?`` placeholders (rewritten to
``%s`` for psycopg) keeps one set of SQL for both; the SQL itself lives in the repository modules
of this package, one per table.  The schema (``schema.py``) is versioned from the first release.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import sqlite3
import threading
from typing import Any, Iterator
from urllib.parse import urlparse, unquote

from .schema import MIGRATIONS, SCHEMA_VERSION


class StoreError(Exception):
    """The database is unusable (bad URL, unreachable server, newer schema)."""


class UniqueViolation(Exception):
    """An INSERT/UPDATE hit a unique constraint (a concurrent create of the same name)."""


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

    def lock_row(self, table: str, row_id: str) -> None:
        """Serialize the transactions that check a sum over a row's children (a tenant's quota, a
        pool's subscription) until commit.  SQLite transactions are serialized already."""
        if self._pg:
            self.execute("SELECT id FROM %s WHERE id = ? FOR UPDATE" % table, (row_id,))


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


def to_json(value) -> str:
    """JSON as stored in text columns (compact, keys sorted: equal values give equal text)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def from_json(text, default=None):
    return default if text is None else json.loads(text)


def now() -> str:
    import datetime
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
