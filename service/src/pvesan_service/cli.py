"""``pvesan``: command-line client of the pvesan API, for admins and for the Proxmox plugin.

Standard library only (starts fast: the Proxmox plugin runs it for every storage call).
Settings, strongest first: command-line flags, environment (PVESAN_API_URL, PVESAN_TOKEN,
PVESAN_TOKEN_FILE, PVESAN_CA, PVESAN_SSL_VERIFY, PVESAN_TENANT, PVESAN_TIMEOUT), then a TOML file
(--config, PVESAN_CONFIG, ~/.config/pvesan/client.toml or /etc/pvesan/client.toml) with the keys
api_url, token, token_file, ca, ssl_verify, tenant, timeout.

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
import urllib.error
import urllib.parse
import urllib.request

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_AUTH, EXIT_CONNECT, EXIT_SERVER, EXIT_INVALID = range(9)
DEFAULT_CONFIGS = ("~/.config/pvesan/client.toml", "/etc/pvesan/client.toml")
ENV = {"api_url": "PVESAN_API_URL", "token": "PVESAN_TOKEN", "token_file": "PVESAN_TOKEN_FILE", "ca": "PVESAN_CA",
       "ssl_verify": "PVESAN_SSL_VERIFY", "tenant": "PVESAN_TENANT", "timeout": "PVESAN_TIMEOUT",
       "insecure_http": "PVESAN_INSECURE_HTTP"}


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
                "timeout": 30, "insecure_http": False}
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
    for key in ("api_url", "token_file", "ca", "tenant", "timeout"):
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
    scheme = urllib.parse.urlsplit(settings["api_url"]).scheme
    if scheme != "https" and not (scheme == "http" and settings["insecure_http"]):
        # checked before anything is sent: the bearer token never travels in clear by mistake
        raise CliError("refusing to send the API token to %s: use an https:// URL (plain http:// only with "
                       "--insecure-http, for a lab)" % settings["api_url"], EXIT_USAGE)
    if not settings["token"]:
        raise CliError("no token: set PVESAN_TOKEN, --token-file or token/token_file in the config file", EXIT_USAGE)
    try:
        settings["timeout"] = float(settings["timeout"])
    except ValueError:
        raise CliError("timeout must be a number of seconds", EXIT_USAGE) from None
    return settings


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: urllib would send the Authorization header along, to any host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Client:
    def __init__(self, settings: dict):
        self.base = settings["api_url"].rstrip("/")
        self.token = settings["token"]
        self.tenant = settings["tenant"]
        self.timeout = settings["timeout"]
        if self.base.startswith("https://"):
            if settings["ssl_verify"]:
                self.ctx = ssl.create_default_context(cafile=settings["ca"]) if settings["ca"] else ssl.create_default_context()
            else:
                self.ctx = ssl._create_unverified_context()  # noqa: S323  (asked for with ssl_verify 0)
        else:
            self.ctx = None

    def call(self, method: str, path: str, body=None, query=None):
        query = {k: v for k, v in (query or {}).items() if v not in (None, [], False)}
        if self.tenant and path.startswith("/api/v1/") and not path.startswith(("/api/v1/tenants", "/api/v1/pools",
                                                                                "/api/v1/service-types")):
            query.setdefault("tenant", self.tenant)
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode({k: ("true" if v is True else v) for k, v in query.items()}, doseq=True)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=self.ctx))
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise _http_error(exc) from None
        except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError("cannot reach %s: %s" % (self.base, reason), EXIT_CONNECT) from None
        return json.loads(raw) if raw else None


def _http_error(exc) -> CliError:
    status = exc.code
    try:
        detail = json.loads(exc.read() or b"{}").get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, list):  # validation errors: "field: message" each
        detail = "; ".join("%s: %s" % (".".join(str(x) for x in d.get("loc", [])[1:]) or "request", d.get("msg")) for d in detail)
    message = detail or exc.reason or "HTTP %d" % status
    if 300 <= status < 400:
        message = "the server answered with a redirect (HTTP %d to %s): not followed, the token goes only to the " \
                  "configured API URL" % (status, exc.headers.get("Location"))
    code = {401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT, 400: EXIT_INVALID, 422: EXIT_INVALID}.get(
        status, EXIT_SERVER if status >= 500 else EXIT_ERROR)
    return CliError(message, code, status)


# ------------------------------------------------------------------------------------- output
def _human(data) -> str:
    if data is None:
        return "ok"
    if isinstance(data, list):
        if not data:
            return "(none)"
        cols = [c for c in ("name", "id", "tenant", "pool", "size", "state", "kind", "readonly", "total", "available",
                            "volume", "created_at") if c in data[0]]
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


# ------------------------------------------------------------------------------------- commands
def run(a, c: Client):
    v = "/api/v1/volumes/"
    q = urllib.parse.quote
    cmd = (a.group, getattr(a, "action", None))
    if cmd[0] == "status":
        return c.call("GET", "/api/v1/status", query={"service_type": a.service_type, "query_include": _tags(a.include),
                                                      "query_exclude": _tags(a.exclude)})
    if cmd[0] == "health":
        return c.call("GET", "/healthz")
    if cmd[0] == "whoami":
        return c.call("GET", "/api/v1/whoami")
    if cmd[0] == "reconcile":
        return c.call("POST", "/api/v1/reconcile")
    if cmd == ("tenant", "create"):
        body = {"name": a.name, "initiators": _tags(a.initiator)}
        if a.quota:
            body["quota_bytes"] = _size_bytes(a.quota)
        if a.no_chap:
            body["chap"] = None  # otherwise the service generates the tenant's credentials
        elif _chap(a) is not None:
            body["chap"] = _chap(a)
        return c.call("POST", "/api/v1/tenants", body)
    if cmd == ("tenant", "list"):
        return c.call("GET", "/api/v1/tenants")
    if cmd == ("tenant", "show"):
        return c.call("GET", "/api/v1/tenants/" + q(a.name))
    if cmd == ("tenant", "update"):
        body = {}
        if a.initiator is not None:
            body["initiators"] = _tags(a.initiator)
        if a.quota is not None:
            body["quota_bytes"] = None if a.quota == "none" else _size_bytes(a.quota)
        if a.no_chap:
            body["chap"] = None
        elif _chap(a) is not None:
            body["chap"] = _chap(a)
        return c.call("PATCH", "/api/v1/tenants/" + q(a.name), body)
    if cmd == ("tenant", "delete"):
        return c.call("DELETE", "/api/v1/tenants/" + q(a.name))
    if cmd == ("token", "create"):
        return c.call("POST", "/api/v1/tokens", {"name": a.name, "tenant": a.for_tenant, "readonly": a.readonly})
    if cmd == ("token", "list"):
        return c.call("GET", "/api/v1/tokens", query={"tenant": a.for_tenant})
    if cmd == ("token", "revoke"):
        return c.call("DELETE", "/api/v1/tokens/" + q(a.id))
    if cmd == ("pool", "create"):
        options = {}
        for item in a.option or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise CliError("--option takes KEY=VALUE, got %r" % item, EXIT_USAGE)
            options[key] = value
        return c.call("POST", "/api/v1/pools", {"name": a.name, "kind": a.kind, "options": options, "tags": _tags(a.tag)})
    if cmd == ("pool", "list"):
        return c.call("GET", "/api/v1/pools")
    if cmd == ("pool", "show"):
        return c.call("GET", "/api/v1/pools/" + q(a.name))
    if cmd == ("pool", "update"):
        return c.call("PATCH", "/api/v1/pools/" + q(a.name), {"tags": _tags(a.tag)})
    if cmd == ("pool", "delete"):
        return c.call("DELETE", "/api/v1/pools/" + q(a.name))
    if cmd == ("service-type", "create"):
        return c.call("POST", "/api/v1/service-types", {
            "name": a.name, "description": a.description, "pool_tags": _tags(a.pool_tag), "block_size": a.block_size,
            "thin": not a.thick, "chap": a.chap, "default": a.default})
    if cmd == ("service-type", "list"):
        return c.call("GET", "/api/v1/service-types")
    if cmd == ("service-type", "show"):
        return c.call("GET", "/api/v1/service-types/" + q(a.name))
    if cmd == ("service-type", "delete"):
        return c.call("DELETE", "/api/v1/service-types/" + q(a.name))
    if cmd == ("volume", "create"):
        body = {"name": a.name, "size": a.size, "service_type": a.service_type, "query_include": _tags(a.include),
                "query_exclude": _tags(a.exclude), "tags": _tags(a.tag)}
        if a.initiator is not None:
            body["initiators"] = _tags(a.initiator)
        chap = _chap(a)
        if chap:
            body["chap"] = chap
        return c.call("POST", "/api/v1/volumes", body)
    if cmd == ("volume", "list"):
        return c.call("GET", "/api/v1/volumes", query={"prefix": a.prefix, "vmid": a.vmid, "tag": a.tag, "detail": a.detail})
    if cmd == ("volume", "show"):
        return c.call("GET", v + q(a.name))
    if cmd == ("volume", "resize"):
        return c.call("POST", v + q(a.name) + "/resize", {"size": a.size})
    if cmd == ("volume", "rename"):
        return c.call("POST", v + q(a.name) + "/rename", {"name": a.new_name})
    if cmd == ("volume", "update"):
        body = {}
        if a.tag is not None:
            body["tags"] = _tags(a.tag)
        if a.tenant_initiators:
            body["initiators"] = None
        elif a.initiator is not None:
            body["initiators"] = _tags(a.initiator)
        if a.tenant_chap:
            body["chap"] = None
        elif _chap(a) is not None:
            body["chap"] = _chap(a)
        return c.call("PATCH", v + q(a.name), body)
    if cmd == ("volume", "delete"):
        return c.call("DELETE", v + q(a.name), query={"cascade": a.cascade})
    if cmd == ("volume", "clone"):
        return c.call("POST", v + q(a.name) + "/clone", {"name": a.new_name, "snapshot": a.snapshot,
                                                         **({"tags": _tags(a.tag)} if a.tag else {})})
    if cmd == ("snapshot", "create"):
        return c.call("POST", v + q(a.volume) + "/snapshots", {"name": a.snapshot})
    if cmd == ("snapshot", "list"):
        return c.call("GET", v + q(a.volume) + "/snapshots")
    if cmd == ("snapshot", "delete"):
        return c.call("DELETE", v + q(a.volume) + "/snapshots/" + q(a.snapshot), query={"cascade": a.cascade})
    if cmd == ("snapshot", "rollback"):
        return c.call("POST", v + q(a.volume) + "/snapshots/" + q(a.snapshot) + "/rollback")
    raise CliError("unknown command", EXIT_USAGE)


def _size_bytes(text: str) -> int:
    from .names import parse_size  # same parser as the server
    from .errors import Invalid
    try:
        return parse_size(int(text) if text.isdigit() else text)
    except Invalid as exc:
        raise CliError(exc.message, EXIT_USAGE) from None


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
    sub = ap.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def chap_opts(p, rotate=False):
        p.add_argument("--chap-user", help="CHAP name (no other tenant may use it); left out: generated")
        p.add_argument("--chap-password", help="CHAP secret; left out: generated (prefer that: it never is on a command line)")
        p.add_argument("--mutual-chap", action="store_true", help="mutual CHAP with generated credentials")
        p.add_argument("--mutual-user")
        p.add_argument("--mutual-password")
        if rotate:
            p.add_argument("--rotate-chap", action="store_true", help="a new generated CHAP secret (same user)")

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
    g.add_parser("list")
    g.add_parser("show").add_argument("name")
    p = g.add_parser("update")
    p.add_argument("name")
    p.add_argument("--tag", action="append", required=True)
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
        client = Client(load_settings(a))
        data = run(a, client)
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
