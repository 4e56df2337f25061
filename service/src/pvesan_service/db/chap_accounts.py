"""Table ``chap_accounts``: every CHAP name (incoming or mutual) and its owning tenant.

The name is the primary key: tgtd keeps its accounts in one namespace for all targets, so a name
may belong to one tenant only.  The secret is sealed (``domain.secretbox``)."""
from __future__ import annotations

from typing import Optional

from .store import now


def claim(t, username: str, tenant_id: str, sealed: str) -> dict:
    """Insert the account unless the name exists, and return the row that holds the name now
    (``ON CONFLICT DO NOTHING``: a concurrent claim does not abort the transaction)."""
    t.execute("INSERT INTO chap_accounts (username, tenant_id, secret, created_at) VALUES (?,?,?,?) "
              "ON CONFLICT (username) DO NOTHING", (username, tenant_id, sealed, now()))
    return t.execute("SELECT tenant_id, secret FROM chap_accounts WHERE username = ?", (username,)).one()


def set_secret(t, username: str, sealed: str) -> None:
    t.execute("UPDATE chap_accounts SET secret = ? WHERE username = ?", (sealed, username))


def release(t, usernames) -> None:
    """Drop the accounts among ``usernames`` that no tenant and no volume uses any more."""
    for user in {u for u in usernames if u}:
        t.execute("DELETE FROM chap_accounts WHERE username = ? "
                  "AND NOT EXISTS (SELECT 1 FROM volumes WHERE chap_user = ? OR chap_mutual_user = ?) "
                  "AND NOT EXISTS (SELECT 1 FROM tenants WHERE chap_user = ? OR chap_mutual_user = ?)",
                  (user, user, user, user, user))


def release_unused(t) -> int:
    """Drop every account nothing uses (left by a release lost in a power cut); returns how many."""
    cur = t.execute("DELETE FROM chap_accounts WHERE "
                    "NOT EXISTS (SELECT 1 FROM volumes v WHERE v.chap_user = chap_accounts.username "
                    "OR v.chap_mutual_user = chap_accounts.username) "
                    "AND NOT EXISTS (SELECT 1 FROM tenants n WHERE n.chap_user = chap_accounts.username "
                    "OR n.chap_mutual_user = chap_accounts.username)")
    return max(cur.rowcount, 0)


def any_(t) -> Optional[dict]:
    return t.execute("SELECT username FROM chap_accounts LIMIT 1").one()
