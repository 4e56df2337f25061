"""Server configuration: a YAML or TOML file (by extension), a few environment overrides."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from .api.guard import Limits

DEFAULTS: dict[str, Any] = {
    "listen": "0.0.0.0:8443",
    "tls_cert": None,
    "tls_key": None,
    "insecure_http": False,  # plain HTTP only when asked (tests, or TLS terminated elsewhere)
    "database": "sqlite:////var/lib/pvesan/state.db",
    "sqlite_synchronous": "FULL",
    "admin_token": None,
    "admin_token_file": None,
    # CHAP secrets are sealed in the database with this key (created 0600 when missing); keep it
    # apart from the database, back it up with it, and give every head of an HA pair the same one
    "secret_key_file": "/etc/pvesan/secret.key",
    "iqn_prefix": "iqn.2026-11.org.pvesan",
    "portals": ["127.0.0.1:3260"],
    "target": {"driver": "tgt"},
    "pools": [],
    "service_types": [],
    "reconcile_interval": 5.0,
    "reconcile_full_interval": 600.0,
    "capacity_ttl": 2.0,
    # seconds between measurements of the bytes volumes allocate (one query per pool)
    "allocation_interval": 30.0,
    # used fractions of a pool that log a warning, then an error, and degrade /healthz
    "pool_alarms": [0.85, 0.95],
    "metrics_public": False,
    "log_format": "json",  # json | text
    "log_target": "stdout",  # stdout | journald
    "log_level": "info",
    "access_log": True,
    # bounds per HTTP client (api/guard.py): request_timeout, keepalive_timeout,
    # tls_handshake_timeout (seconds), max_connections, max_connections_per_client,
    # max_header_bytes, max_body_bytes
    "http": {},
}
ENV = {"PVESAN_DATABASE": "database", "PVESAN_ADMIN_TOKEN": "admin_token", "PVESAN_LISTEN": "listen"}


class ConfigError(Exception):
    pass


def load(path: str | None) -> dict[str, Any]:
    cfg = dict(DEFAULTS)
    if path:
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise ConfigError("cannot read config file %s: %s" % (path, exc.strerror)) from None
        try:
            if path.endswith(".toml"):
                import tomllib
                data = tomllib.loads(raw.decode())
            else:
                import yaml
                data = yaml.safe_load(raw) or {}
        except Exception as exc:
            raise ConfigError("cannot parse config file %s: %s" % (path, exc)) from None
        if not isinstance(data, dict):
            raise ConfigError("config file %s must hold a mapping of settings" % path)
        unknown = sorted(set(data) - set(DEFAULTS))
        if unknown:
            raise ConfigError("unknown setting(s) in %s: %s (known: %s)" % (path, ", ".join(unknown), ", ".join(sorted(DEFAULTS))))
        cfg.update(data)
    for env, key in ENV.items():
        if os.environ.get(env):
            cfg[key] = os.environ[env]
    if not cfg["admin_token"] and cfg["admin_token_file"]:
        try:
            with open(cfg["admin_token_file"], encoding="utf-8") as fh:
                cfg["admin_token"] = fh.read().strip()
        except OSError as exc:
            raise ConfigError("cannot read admin_token_file %s: %s" % (cfg["admin_token_file"], exc.strerror)) from None
    host, sep, port = str(cfg["listen"]).rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError("listen must be HOST:PORT, e.g. 0.0.0.0:8443 (got %r)" % cfg["listen"])
    cfg["host"], cfg["port"] = host.strip("[]") or "0.0.0.0", int(port)
    if bool(cfg["tls_cert"]) != bool(cfg["tls_key"]):
        raise ConfigError("set both tls_cert and tls_key")
    if not cfg["tls_cert"] and not cfg["insecure_http"]:
        raise ConfigError("TLS is required: set tls_cert and tls_key (or insecure_http: true for a lab)")
    if cfg["admin_token"] and len(cfg["admin_token"]) < 24:
        raise ConfigError("admin_token is too short: use at least 24 random characters")
    if not isinstance(cfg["target"], dict) or "driver" not in cfg["target"]:
        raise ConfigError("target must be a mapping with a driver (tgt or lio)")
    # the other keys of target are the driver's options (targets.make_target_driver checks them)
    write_through = cfg["target"].get("write_through", False)
    if not isinstance(write_through, bool):
        raise ConfigError("target.write_through must be true or false (got %r): true makes the target acknowledge "
                          "a write only once it is on the disk, as the heads of an HA pair need" % (write_through,))
    cfg["http_limits"] = _http_limits(cfg["http"])
    alarms = cfg["pool_alarms"]
    if not isinstance(alarms, list) or len(alarms) != 2 or not all(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in alarms) or not 0 < alarms[0] < alarms[1] <= 1:
        raise ConfigError("pool_alarms must be two used fractions, warning then critical, e.g. [0.85, 0.95] (got %r)" % (alarms,))
    for pool in cfg["pools"] if isinstance(cfg["pools"], list) else []:
        if not isinstance(pool, dict) or not {"name", "kind"} <= set(pool) or set(pool) - set(POOL_KEYS):
            raise ConfigError("each pool needs name and kind and may have %s (got %r)"
                              % (", ".join(POOL_KEYS[2:]), pool))
    return cfg


POOL_KEYS = ("name", "kind", "options", "tags", "max_subscription", "reserve_percent")


def _http_limits(values) -> Limits:
    known = {f.name: f.type for f in dataclasses.fields(Limits)}
    if not isinstance(values, dict) or set(values) - set(known):
        raise ConfigError("http must be a mapping of %s" % ", ".join(sorted(known)))
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 \
                or (known[key] == "int" and not isinstance(value, int)):
            raise ConfigError("http.%s must be a positive %s, not %r" % (key, "integer" if known[key] == "int" else "number", value))
    return Limits(**values)
