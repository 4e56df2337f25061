"""The database schema: an append-only list of migrations; ``schema_migrations`` records what ran.

Never edit a released entry, add a new one.  Types used are understood by both SQLite and
PostgreSQL; booleans are 0/1 integers, JSON is text, times are ISO-8601 text.
"""
from __future__ import annotations

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
    (3, "thin provisioning: allocated bytes per volume, over-subscription limits per pool", [
        # what the volume's data takes in its pool, as last measured (volume show measures anew)
        "ALTER TABLE volumes ADD COLUMN allocated_bytes BIGINT",
        # provisioned bytes may reach max_subscription x usable bytes (NULL: no limit); usable is
        # the pool's size less reserve_percent
        "ALTER TABLE pools ADD COLUMN max_subscription REAL",
        "ALTER TABLE pools ADD COLUMN reserve_percent REAL NOT NULL DEFAULT 0",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
