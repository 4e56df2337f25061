"""CHAP credentials: generated, validated, and owned by exactly one tenant.

tgtd keeps its CHAP accounts in one namespace shared by every target: an account re-created with
another password, or bound to a second target, changes who may log in to the first.  So every
CHAP name (incoming and mutual/outgoing alike) is a row of ``chap_accounts`` whose primary key is
the name and which belongs to one tenant: a name another tenant holds is refused without saying
whose it is, and the secret of a name changes only when its owner rotates it on purpose, which
re-exports every volume that uses it.  Generated names are random, not derived from anything an
initiator can see (IQNs, volume ids).  Secrets are sealed at rest (``secretbox``).
"""
from __future__ import annotations

import re
import secrets
import types
from typing import Mapping, Optional

from .. import db
from ..errors import Conflict, Invalid
from ..targets.base import Chap
from .secretbox import SecretBox

# No ',' anywhere: tgtd's management protocol sends "user=...,password=..." and splits on commas,
# so a comma in a secret would cut it short or smuggle in a "user=" of another account.
USER_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,64}$")
SECRET_RE = re.compile(r"^[!-+\--~]{12,128}$")
GENERATED_PREFIX = "pvesan-"
GENERATE: Mapping = types.MappingProxyType({})  # a request for generated credentials (new tenants' default)


def generate_user() -> str:
    return GENERATED_PREFIX + secrets.token_hex(10)


def generate_secret() -> str:
    # 16 characters (96 random bits): what every initiator accepts, some allow no more
    return secrets.token_urlsafe(12)


def resolve(spec: Optional[Mapping], current: Optional[Chap] = None) -> Chap:
    """Credentials from a request: ``{user?, password?, mutual?: {user?, password?}}``.  A missing
    user keeps the current one (or is generated), a missing password is generated: ``{}`` asks for
    new generated credentials, or for a new secret of the current user (rotation)."""
    spec = spec or {}
    user = spec.get("user") or (current.user if current else None) or generate_user()
    password = spec.get("password") or generate_secret()
    mutual = spec.get("mutual")
    mutual_user = mutual_password = None
    if mutual is not None:
        mutual_user = mutual.get("user") or (current.mutual_user if current else None) or generate_user()
        mutual_password = mutual.get("password") or generate_secret()
    chap = Chap(user, password, mutual_user, mutual_password)
    validate(chap)
    return chap


def validate(chap: Chap) -> None:
    for what, value, rule in (("user", chap.user, USER_RE), ("password", chap.password, SECRET_RE),
                              ("mutual user", chap.mutual_user, USER_RE), ("mutual password", chap.mutual_password, SECRET_RE)):
        if value is not None and not rule.match(value):
            raise Invalid("invalid CHAP %s: %s" % (what, "1-64 characters A-Z a-z 0-9 . _ : @ -" if "user" in what else
                                                   "12-128 printable characters without spaces or commas"))
    if chap.mutual_user is not None:
        # one account cannot authenticate both directions of one target (tgtd keeps a single
        # account list), and RFC 7143 forbids the same secret in both directions
        if chap.mutual_user == chap.user:
            raise Invalid("the mutual CHAP user must differ from the CHAP user %r" % chap.user)
        if chap.mutual_password == chap.password:
            raise Invalid("the mutual CHAP password must differ from the CHAP password")


def claim(t, box: SecretBox, tenant_id: str, chap: Chap, rotate: bool = False) -> list[str]:
    """Make the accounts of ``chap`` exist for ``tenant_id`` inside transaction ``t``.  Returns the
    names whose secret changed (``rotate``: the owner gave a new secret on purpose).

    A name held by another tenant is a 409 that does not say by whom; the same tenant giving
    another secret for one of its names without ``rotate`` is a 409 as well (it would change the
    credentials of its other volumes)."""
    rotated = []
    for user, password in ((chap.user, chap.password), (chap.mutual_user, chap.mutual_password)):
        if user is None:
            continue
        row = db.chap_accounts.claim(t, user, tenant_id, box.seal(password, user))
        if row["tenant_id"] != tenant_id:
            raise Conflict("CHAP user name %r is not available: choose another one, or leave it out to get a "
                           "generated one" % user)
        if box.open(row["secret"], user) != password:
            if not rotate:
                raise Conflict("CHAP user %r is already used by this tenant with another secret: give the same "
                               "secret, or change it for all its volumes with PATCH" % user)
            db.chap_accounts.set_secret(t, user, box.seal(password, user))
            rotated.append(user)
    return rotated


def opened(box: SecretBox, user: Optional[str], sealed: Optional[str], mutual_user: Optional[str],
           mutual_sealed: Optional[str]) -> Optional[Chap]:
    """Credentials of a row (names and sealed secrets), or None without CHAP."""
    if not user:
        return None
    return Chap(user, box.open(sealed, user), mutual_user or None,
                box.open(mutual_sealed, mutual_user) if mutual_user else None)


def out(chap: Optional[Chap]) -> Optional[dict]:
    """The API form of credentials."""
    if chap is None:
        return None
    return {"user": chap.user, "password": chap.password,
            "mutual": {"user": chap.mutual_user, "password": chap.mutual_password} if chap.mutual_user else None}


def redact(data):
    """``data`` (an API response) with every CHAP secret replaced by null, names kept: what
    read-only tokens get (a secret would be iSCSI write access)."""
    if isinstance(data, list):
        return [redact(item) for item in data]
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        if key in ("chap", "mutual") and isinstance(value, dict):
            value = dict(redact(value), password=None)
        else:
            value = redact(value)
        out[key] = value
    return out
