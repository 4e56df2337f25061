"""``pvesan``: command-line client of the pvesan API, for admins and for the Proxmox plugin.

Standard library only (starts fast: the Proxmox plugin runs it for every storage call).
Settings, strongest first: command-line flags, environment (PVESAN_API_URL, PVESAN_TOKEN,
PVESAN_TOKEN_FILE, PVESAN_CA, PVESAN_SSL_VERIFY, PVESAN_INSECURE_HTTP, PVESAN_TENANT,
PVESAN_TIMEOUT, PVESAN_RETRY_FOR), then a TOML file (--config, PVESAN_CONFIG, ~/.config/pvesan/client.toml or
/etc/pvesan/client.toml) with the keys api_url, token, token_file, ca, ssl_verify, insecure_http,
tenant, timeout.  The calls themselves are the shared API client's (shared/_pvesan_client.py).

With ``--json`` stdout carries exactly the API's JSON (``{"ok": true}`` for operations without a
body) and errors are ``{"error": {"status": N, "message": "..."}}``.  Exit codes: 0 success,
1 other error, 2 usage or configuration, 3 not found, 4 conflict, 5 authentication/permission,
6 cannot connect (network/TLS), 7 server error, 8 invalid request.
"""
from __future__ import annotations

import argparse
import json
import os
import ssl
import sys

from .shared._pvesan_client import ApiError, PvesanClient, parse_size, urllib_transport

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_AUTH, EXIT_CONNECT, EXIT_SERVER, EXIT_INVALID = range(9)
DEFAULT_CONFIGS = ("~/.config/pvesan/client.toml", "/etc/pvesan/client.toml")
ENV = {"api_url": "PVESAN_API_URL", "token": "PVESAN_TOKEN", "token_file": "PVESAN_TOKEN_FILE", "ca": "PVESAN_CA",
       "ssl_verify": "PVESAN_SSL_VERIFY", "tenant": "PVESAN_TENANT", "timeout": "PVESAN_TIMEOUT",
       "insecure_http": "PVESAN_INSECURE_HTTP", "retry_for": "PVESAN_RETRY_FOR"}


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR, status: int | None = None):
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise CliError("invalid boolean %r (use 1 or 0)" % value, EXIT_USAGE)


def load_settings(args) -> dict:
    settings = {"api_url": None, "token": None, "token_file": None, "ca": None, "ssl_verify": True, "tenant": None,
                "timeout": 30, "insecure_http": False, "retry_for": 0}
    path = args.config or os.environ.get("PVESAN_CONFIG")
    if not path:
        path = next((os.path.expanduser(p) for p in DEFAULT_CONFIGS if os.path.exists(os.path.expanduser(p))), None)
    if path:
        import tomllib
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise CliError("cannot read config %s: %s" % (path, exc.strerror), EXIT_USAGE) from None
        except tomllib.TOMLDecodeError as exc:
            raise CliError("cannot parse config %s: %s" % (path, exc), EXIT_USAGE) from None
        unknown = sorted(set(data) - set(settings))
        if unknown:
            raise CliError("unknown key(s) in %s: %s" % (path, ", ".join(unknown)), EXIT_USAGE)
        settings.update(data)
    for key, env in ENV.items():
        if os.environ.get(env):
            settings[key] = os.environ[env]
    for key in ("api_url", "token_file", "ca", "tenant", "timeout", "retry_for"):
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    if args.insecure:
        settings["ssl_verify"] = False
    if args.insecure_http:
        settings["insecure_http"] = True
    settings["ssl_verify"] = _bool(settings["ssl_verify"])
    settings["insecure_http"] = _bool(settings["insecure_http"])
    if settings["token_file"] and not os.environ.get("PVESAN_TOKEN"):
        try:
            with open(settings["token_file"], encoding="utf-8") as fh:
                settings["token"] = fh.read().strip()
        except OSError as exc:
            raise CliError("cannot read token file %s: %s" % (settings["token_file"], exc.strerror), EXIT_USAGE) from None
    if not settings["api_url"]:
        raise CliError("no API URL: set --api-url, PVESAN_API_URL or api_url in the config file", EXIT_USAGE)
    if not settings["token"]:
        raise CliError("no token: set PVESAN_TOKEN, --token-file or token/token_file in the config file", EXIT_USAGE)
    for key in ("timeout", "retry_for"):
        try:
            settings[key] = float(settings[key])
        except ValueError:
            raise CliError("%s must be a number of seconds" % key, EXIT_USAGE) from None
    return settings


def make_client(settings: dict) -> PvesanClient:
    ctx = None
    if settings["api_url"].startswith("https://"):
        if settings["ssl_verify"]:
            ctx = ssl.create_default_context(cafile=settings["ca"]) if settings["ca"] else ssl.create_default_context()
        else:
            ctx = ssl._create_unverified_context()  # noqa: S323  (asked for with ssl_verify 0)
    try:
        return PvesanClient(settings["api_url"], settings["token"], transport=urllib_transport(ctx), tenant=settings["tenant"],
                            timeout=settings["timeout"], insecure_http=settings["insecure_http"],
                            retry_for=settings["retry_for"])
    except ApiError as exc:  # checked before anything is sent: the token never travels in clear by mistake
        raise CliError(exc.message + " (--insecure-http)", EXIT_USAGE) from None


def _exit_code(status: int) -> int:
    if status == 0:
        return EXIT_CONNECT
    return {401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT, 400: EXIT_INVALID, 422: EXIT_INVALID}.get(
        status, EXIT_SERVER if status >= 500 else EXIT_ERROR)


# ------------------------------------------------------------------------------------- output
def _human(data) -> str:
    if data is None:
        return "ok"
    if isinstance(data, list):
        if not data:
            return "(none)"
        cols = [c for c in ("name", "id", "tenant", "pool", "size", "allocated", "state", "kind", "readonly", "total",
                            "available", "subscription", "volume", "created_at") if c in data[0]]
        rows = [[_cell(item.get(c)) for c in cols] for item in data]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
        return "\n".join(lines)
    if isinstance(data, dict):
        return "\n".join("%s: %s" % (k, _cell(v)) for k, v in data.items())
    return str(data)


def _cell(v) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return "-" if v is None else str(v)


# ------------------------------------------------------------------------------------- arguments
def _tags(values) -> list:
    """Repeated and/or comma-separated values, as storage.cfg string-lists are written."""
    return [x for v in (values or []) for x in v.split(",") if x]


def _chap(a) -> dict | None:
    """The CHAP of a request from the --chap-* and --mutual-* options (None when none is given);
    what is left out the service generates (a user keeps its name when only the secret is new)."""
    chap = {k: v for k, v in (("user", a.chap_user), ("password", a.chap_password)) if v}
    mutual = {k: v for k, v in (("user", getattr(a, "mutual_user", None)), ("password", getattr(a, "mutual_password", None))) if v}
    if mutual or getattr(a, "mutual_chap", False):
        chap["mutual"] = mutual
    if getattr(a, "rotate_chap", False) or chap:
        return chap
    return None


def _size(text: str) -> int:
    try:
        return parse_size(int(text) if text.isdigit() else text)  # the service's own parser
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _ratio(text: str):
    """--max-subscription: a number, or 'none' for no limit."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise CliError("--max-subscription takes a number (provisioned bytes per usable byte) or 'none', got %r"
                       % text, EXIT_USAGE) from None


def _pool_limits(a) -> dict:
    limits = {}
    if a.max_subscription is not None:
        limits["max_subscription"] = _ratio(a.max_subscription)
    if a.reserve_percent is not None:
        limits["reserve_percent"] = a.reserve_percent
    return limits


def _pool_changes(a) -> dict:
    changes = _pool_limits(a)
    if a.tag is not None:
        changes["tags"] = _tags(a.tag)
    if not changes:
        raise CliError("pool update needs --tag, --max-subscription or --reserve-percent", EXIT_USAGE)
    return changes


def _options(items) -> dict:
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError("--option takes KEY=VALUE, got %r" % item, EXIT_USAGE)
        options[key] = value
    return options


def _changes(**given) -> dict:
    """Only what the command line gave (None: not given)."""
    return {k: v for k, v in given.items() if v is not None}


def _tenant_changes(a) -> dict:
    changes = _changes(initiators=_tags(a.initiator) if a.initiator is not None else None)
    if a.quota is not None:
        changes["quota_bytes"] = None if a.quota == "none" else _size(a.quota)
    if a.no_chap:
        changes["chap"] = None
    elif _chap(a) is not None:
        changes["chap"] = _chap(a)
    return changes


def _volume_changes(a) -> dict:
    changes = _changes(tags=_tags(a.tag) if a.tag is not None else None)
    if a.tenant_initiators:
        changes["initiators"] = None
    elif a.initiator is not None:
        changes["initiators"] = _tags(a.initiator)
    if a.tenant_chap:
        changes["chap"] = None
    elif _chap(a) is not None:
        changes["chap"] = _chap(a)
    return changes


# ------------------------------------------------------------------------------------- commands
# (group, action) -> the client call; the routes and bodies are the client's (shared/_pvesan_client.py)
COMMANDS = {
    ("status", None): lambda a, c: c.status(a.service_type, _tags(a.include), _tags(a.exclude)),
    ("health", None): lambda a, c: c.health(),
    ("whoami", None): lambda a, c: c.whoami(),
    ("reconcile", None): lambda a, c: c.reconcile(),
    ("tenant", "create"): lambda a, c: c.create_tenant(
        a.name, _tags(a.initiator), _size(a.quota) if a.quota else None, _chap(a), a.no_chap),
    ("tenant", "list"): lambda a, c: c.tenants(),
    ("tenant", "show"): lambda a, c: c.tenant(a.name),
    ("tenant", "update"): lambda a, c: c.update_tenant(a.name, **_tenant_changes(a)),
    ("tenant", "delete"): lambda a, c: c.delete_tenant(a.name),
    ("token", "create"): lambda a, c: c.create_token(a.name, a.for_tenant, a.readonly),
    ("token", "list"): lambda a, c: c.tokens(a.for_tenant),
    ("token", "revoke"): lambda a, c: c.revoke_token(a.id),
    ("pool", "create"): lambda a, c: c.create_pool(a.name, a.kind, _options(a.option), _tags(a.tag), **_pool_limits(a)),
    ("pool", "list"): lambda a, c: c.pools(),
    ("pool", "show"): lambda a, c: c.pool(a.name),
    ("pool", "update"): lambda a, c: c.update_pool(a.name, **_pool_changes(a)),
    ("pool", "delete"): lambda a, c: c.delete_pool(a.name),
    ("service-type", "create"): lambda a, c: c.create_service_type(
        a.name, a.description, _tags(a.pool_tag), a.block_size, not a.thick, a.chap, a.default),
    ("service-type", "list"): lambda a, c: c.service_types(),
    ("service-type", "show"): lambda a, c: c.service_type(a.name),
    ("service-type", "delete"): lambda a, c: c.delete_service_type(a.name),
    ("volume", "create"): lambda a, c: c.create_volume(
        a.name, a.size, a.service_type, _tags(a.include), _tags(a.exclude), _tags(a.tag),
        _tags(a.initiator) if a.initiator is not None else None, _chap(a)),
    ("volume", "list"): lambda a, c: c.volumes(a.prefix, a.vmid, a.tag, a.detail),
    ("volume", "show"): lambda a, c: c.volume(a.name),
    ("volume", "resize"): lambda a, c: c.resize_volume(a.name, a.size),
    ("volume", "reclaim"): lambda a, c: c.reclaim_volume(a.name),
    ("volume", "rename"): lambda a, c: c.rename_volume(a.name, a.new_name),
    ("volume", "update"): lambda a, c: c.update_volume(a.name, **_volume_changes(a)),
    ("volume", "delete"): lambda a, c: c.delete_volume(a.name, a.cascade),
    ("volume", "clone"): lambda a, c: c.clone_volume(a.name, a.new_name, a.snapshot, _tags(a.tag) if a.tag else None),
    ("snapshot", "create"): lambda a, c: c.create_snapshot(a.volume, a.snapshot),
    ("snapshot", "list"): lambda a, c: c.snapshots(a.volume),
    ("snapshot", "delete"): lambda a, c: c.delete_snapshot(a.volume, a.snapshot, a.cascade),
    ("snapshot", "rollback"): lambda a, c: c.rollback_snapshot(a.volume, a.snapshot),
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pvesan", description="Client of the pvesan volume service API.")
    ap.add_argument("--json", action="store_true", help="print the API's JSON (stable, for scripts)")
    ap.add_argument("--config", help="TOML client config (default ~/.config/pvesan/client.toml, /etc/pvesan/client.toml)")
    ap.add_argument("--api-url", dest="api_url", help="e.g. https://storage1:8443")
    ap.add_argument("--token-file", dest="token_file", help="file holding the API token (or PVESAN_TOKEN)")
    ap.add_argument("--ca", help="CA bundle that signed the server certificate")
    ap.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    ap.add_argument("--insecure-http", dest="insecure_http", action="store_true",
                    help="allow a plain http:// API URL (sends the token in clear: labs only)")
    ap.add_argument("--tenant", help="tenant to act on (admin tokens)")
    ap.add_argument("--timeout", type=float, help="seconds per request (default 30)")
    ap.add_argument("--retry-for", dest="retry_for", type=float,
                    help="seconds to keep retrying while the service cannot be reached, e.g. an HA pair failing over (default 0)")
    sub = ap.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def chap_opts(p, rotate=False):
        p.add_argument("--chap-user", help="CHAP name (no other tenant may use it); left out: generated")
        p.add_argument("--chap-password", help="CHAP secret; left out: generated (prefer that: it never is on a command line)")
        p.add_argument("--mutual-chap", action="store_true", help="mutual CHAP with generated credentials")
        p.add_argument("--mutual-user")
        p.add_argument("--mutual-password")
        if rotate:
            p.add_argument("--rotate-chap", action="store_true", help="a new generated CHAP secret (same user)")

    def pool_limits(p):
        p.add_argument("--max-subscription", help="thin volumes may provision this many times the usable bytes "
                                                  "(default 20); none: no limit")
        p.add_argument("--reserve-percent", type=float, help="percent of the pool no volume may provision (default 0)")

    s = sub.add_parser("status", help="capacity of the pools (and of the tenant)")
    s.add_argument("--service-type")
    s.add_argument("--include", action="append", help="pool tags required (repeat or comma-separate)")
    s.add_argument("--exclude", action="append", help="pool tags refused")
    sub.add_parser("health", help="service health")
    sub.add_parser("whoami", help="what the token is")
    sub.add_parser("reconcile", help="make the target match the database now (admin)")

    g = sub.add_parser("tenant", help="tenants (admin)").add_subparsers(dest="action", required=True)
    p = g.add_parser("create", help="a tenant with generated CHAP credentials; its initiators may log in (ALL: any)")
    p.add_argument("name")
    p.add_argument("--initiator", action="append", help="initiator IQN or address allowed to log in (repeat; ALL: any)")
    p.add_argument("--quota", help="e.g. 10T")
    p.add_argument("--no-chap", action="store_true", help="no CHAP (volumes then rely on the initiator ACL alone)")
    chap_opts(p)
    g.add_parser("list")
    g.add_parser("show").add_argument("name")
    p = g.add_parser("update")
    p.add_argument("name")
    p.add_argument("--initiator", action="append")
    p.add_argument("--quota", help="size or 'none'")
    p.add_argument("--no-chap", action="store_true", help="remove the tenant's CHAP")
    chap_opts(p, rotate=True)
    g.add_parser("delete").add_argument("name")

    g = sub.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    p = g.add_parser("create")
    p.add_argument("name")
    p.add_argument("--for-tenant", help="tenant of the new token (omit for an admin token)")
    p.add_argument("--readonly", action="store_true")
    g.add_parser("list").add_argument("--for-tenant")
    g.add_parser("revoke").add_argument("id")

    g = sub.add_parser("pool", help="pools (admin)").add_subparsers(dest="action", required=True)
    p = g.add_parser("create")
    p.add_argument("name")
    p.add_argument("--kind", required=True, choices=["file", "zfs", "lvmthin"])
    p.add_argument("--option", action="append", help="KEY=VALUE, e.g. path=/srv/pvesan (repeat)")
    p.add_argument("--tag", action="append")
    pool_limits(p)
    g.add_parser("list")
    g.add_parser("show").add_argument("name")
    p = g.add_parser("update", help="change only what is given")
    p.add_argument("name")
    p.add_argument("--tag", action="append", help="the new tags (repeat)")
    pool_limits(p)
    g.add_parser("delete").add_argument("name")

    g = sub.add_parser("service-type", help="provisioning templates").add_subparsers(dest="action", required=True)
    p = g.add_parser("create")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.add_argument("--pool-tag", action="append")
    p.add_argument("--block-size", type=int, default=512, choices=[512, 4096])
    p.add_argument("--thick", action="store_true")
    p.add_argument("--chap", action="store_true", help="volumes get CHAP (generated unless the tenant has its own)")
    p.add_argument("--default", action="store_true")
    g.add_parser("list")
    g.add_parser("show").add_argument("name")
    g.add_parser("delete").add_argument("name")

    g = sub.add_parser("volume", help="volumes").add_subparsers(dest="action", required=True)
    p = g.add_parser("create")
    p.add_argument("name")
    p.add_argument("size", help="bytes or 512M, 10G, 1T")
    p.add_argument("--service-type")
    p.add_argument("--include", action="append")
    p.add_argument("--exclude", action="append")
    p.add_argument("--tag", action="append")
    p.add_argument("--initiator", action="append")
    chap_opts(p)
    p = g.add_parser("list")
    p.add_argument("--prefix")
    p.add_argument("--vmid", type=int)
    p.add_argument("--tag")
    p.add_argument("--detail", action="store_true", help="full volume objects with their export")
    g.add_parser("show").add_argument("name")
    p = g.add_parser("resize", help="grow to an absolute size")
    p.add_argument("name")
    p.add_argument("size")
    g.add_parser("reclaim", help="free the all-zero ranges of a thin volume, online (file pools)").add_argument("name")
    p = g.add_parser("rename")
    p.add_argument("name")
    p.add_argument("new_name")
    p = g.add_parser("update")
    p.add_argument("name")
    p.add_argument("--tag", action="append")
    p.add_argument("--initiator", action="append")
    p.add_argument("--tenant-initiators", action="store_true", help="use the tenant's initiator ACL")
    p.add_argument("--tenant-chap", action="store_true", help="use the tenant's CHAP")
    chap_opts(p, rotate=True)
    p = g.add_parser("delete")
    p.add_argument("name")
    p.add_argument("--cascade", action="store_true", help="also delete dependent clones")
    p = g.add_parser("clone")
    p.add_argument("name")
    p.add_argument("new_name")
    p.add_argument("--snapshot")
    p.add_argument("--tag", action="append")

    g = sub.add_parser("snapshot", help="snapshots").add_subparsers(dest="action", required=True)
    for action in ("create", "delete", "rollback"):
        p = g.add_parser(action)
        p.add_argument("volume")
        p.add_argument("snapshot")
        if action == "delete":
            p.add_argument("--cascade", action="store_true", help="also delete clones made from it")
    g.add_parser("list").add_argument("volume")
    return ap


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    try:
        client = make_client(load_settings(a))
        try:
            data = COMMANDS[(a.group, getattr(a, "action", None))](a, client)
        except ApiError as exc:
            raise CliError(exc.message, _exit_code(exc.status), exc.status or None) from None
    except CliError as exc:
        if a.json:
            print(json.dumps({"error": {"status": exc.status, "message": exc.message}}))
        print("pvesan: %s" % exc.message, file=sys.stderr)
        return exc.code
    if a.json:
        print(json.dumps({"ok": True} if data is None else data, indent=None))
    else:
        print(_human(data))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
