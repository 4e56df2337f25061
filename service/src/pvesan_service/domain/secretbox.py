"""Secrets at rest: CHAP secrets are sealed with the service's own key before they reach the
database, so a copy of the database (a backup, a PostgreSQL replica, a stolen ``state.db``) does
not give iSCSI access.

AES-256-GCM (``cryptography``) with a random 96-bit nonce per value; the account name is the
associated data, so a sealed secret copied onto another account's row does not open.  The key is
32 random bytes, hex-encoded, in a file only root can read (``secret_key_file``, default
``/etc/pvesan/secret.key``), kept apart from the database on purpose.  A check value sealed with
the key is kept in the database: a service started with another key refuses to start instead of
handing out garbage.
"""
from __future__ import annotations

import base64
import os
import secrets
import stat

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "v1:"
KEY_CHECK = "pvesan-key-check"


class SecretBoxError(Exception):
    """The key file is missing, unsafe or not the key the database was sealed with."""


class SecretBox:
    def __init__(self, key: bytes, source: str = "an in-memory key"):
        if len(key) != 32:
            raise SecretBoxError("%s does not hold a 256-bit key (64 hex digits)" % source)
        self._aead = AESGCM(key)
        self.source = source

    @classmethod
    def generate(cls) -> "SecretBox":
        """A throw-away key (tests, and services constructed in process)."""
        return cls(secrets.token_bytes(32))

    @classmethod
    def from_file(cls, path: str) -> "SecretBox":
        """The key of ``path``, created (0600, 32 random bytes) when the file does not exist."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SecretBoxError("cannot create secret key file %s: %s" % (path, exc.strerror)) from None
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        try:
            st = os.stat(path)
            with open(path, encoding="ascii") as fh:
                text = fh.read().strip()
        except (OSError, UnicodeError) as exc:
            raise SecretBoxError("cannot read secret key file %s: %s" % (path, exc)) from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretBoxError("secret key file %s is readable by others (mode %04o): chmod 600 %s"
                                 % (path, stat.S_IMODE(st.st_mode), path))
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise SecretBoxError("secret key file %s does not hold 64 hex digits" % path) from None
        return cls(key, path)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        return PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, sealed: str, context: str) -> str:
        if not sealed.startswith(PREFIX):
            raise SecretBoxError("a sealed secret of an unknown format")
        raw = base64.b64decode(sealed[len(PREFIX):])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], context.encode("utf-8")).decode("utf-8")
        except InvalidTag:
            raise SecretBoxError("a secret in the database does not open with %s: is it the key the database "
                                 "was sealed with?" % self.source) from None

    def key_check(self) -> str:
        return self.seal(KEY_CHECK, KEY_CHECK)

    def verify(self, check: str) -> None:
        """Raise SecretBoxError unless ``check`` (from ``key_check``) was sealed with this key."""
        if self.open(check, KEY_CHECK) != KEY_CHECK:
            raise SecretBoxError("the key check value does not match %s" % self.source)
