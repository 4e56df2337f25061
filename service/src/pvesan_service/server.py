"""``pvesan-service``: run the API server (TLS, JSON logs, reconciler)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time

from . import __version__, config as config_mod
from .domain import Service
from .domain.pools import DEFAULT_MAX_SUBSCRIPTION
from .reconciler import Reconciler, reconcile
from .domain.secretbox import SecretBox
from .db import Store, StoreError
from .targets import make_target_driver

log = logging.getLogger("pvesan.server")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what journald and log shippers parse without guessing."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + ".%03dZ" % record.msecs,
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class JournaldHandler(logging.Handler):
    """Native journald protocol over its datagram socket (no python-systemd needed)."""

    PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}

    def __init__(self, path: str = "/run/systemd/journal/socket"):
        super().__init__()
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record).replace("\n", " ")
            fields = ["MESSAGE=" + msg, "PRIORITY=%d" % self.PRIORITY.get(record.levelname, 6),
                      "SYSLOG_IDENTIFIER=pvesan-service", "LOGGER=" + record.name]
            self.sock.sendto("\n".join(fields).encode() + b"\n", self.path)
        except Exception:
            self.handleError(record)


class DropQueryString(logging.Filter):
    """Access log lines without query strings: a token sent by mistake as ?token=... (or any
    other parameter) stays out of the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            record.args = record.args[:2] + (record.args[2].split("?", 1)[0],) + record.args[3:]
        return True


def setup_logging(cfg: dict) -> None:
    handler = JournaldHandler() if cfg["log_target"] == "journald" else logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if cfg["log_format"] == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(str(cfg["log_level"]).upper())
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, DropQueryString) for f in access.filters):
        access.addFilter(DropQueryString())


def notify_systemd(state: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if systemd gave one.

    The unit is Type=notify so that "started" means serving: the start-up reconcile has exported
    every volume and the API listens. A cluster manager orders the floating addresses after the
    service's start; they must not come up in front of a head that cannot answer yet."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):  # abstract namespace
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state, exc)


def build(cfg: dict) -> tuple[Service, Reconciler]:
    """Store (migrated), target driver, service with the configured pools and service types."""
    box = SecretBox.from_file(cfg["secret_key_file"])
    store = Store(cfg["database"], sqlite_synchronous=cfg["sqlite_synchronous"])
    version = store.migrate()
    log.info("database ready (schema version %d)", version)
    tcfg = dict(cfg["target"])
    driver = tcfg.pop("driver")
    tcfg.setdefault("iqn_prefix", cfg["iqn_prefix"] + ":")  # the driver lists only our targets
    target = make_target_driver(driver, **tcfg)
    service = Service(store, target, iqn_prefix=cfg["iqn_prefix"], portals=cfg["portals"],
                      admin_token=cfg["admin_token"], capacity_ttl=float(cfg["capacity_ttl"]), secret_box=box,
                      pool_alarms=tuple(cfg["pool_alarms"]))
    for pool in cfg["pools"]:
        service.pools.create(pool["name"], pool["kind"], pool.get("options", {}), pool.get("tags", []), replace=True,
                             max_subscription=pool.get("max_subscription", DEFAULT_MAX_SUBSCRIPTION),
                             reserve_percent=pool.get("reserve_percent", 0.0))
    for st in cfg["service_types"]:
        st = dict(st)
        service.service_types.create(st.pop("name"), replace=True, **st)
    return service, Reconciler(service, float(cfg["reconcile_interval"]), float(cfg["reconcile_full_interval"]),
                               float(cfg["allocation_interval"]))


def main(argv=None) -> int:
    # everything the service creates (database, WAL, key file, logs) is its own
    os.umask(0o077)
    ap = argparse.ArgumentParser(prog="pvesan-service", description="pvesan volume/target service (REST API over HTTPS)")
    ap.add_argument("-c", "--config", default=None, help="YAML or TOML config file (default: built-in defaults + env)")
    ap.add_argument("--check-config", action="store_true", help="validate the config, migrate the database and exit")
    ap.add_argument("--version", action="version", version=__version__)
    args = ap.parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print("pvesan-service: %s" % exc, file=sys.stderr)
        return 2
    setup_logging(cfg)
    try:
        service, reconciler = build(cfg)
    except (StoreError, Exception) as exc:  # say what is wrong in one line, no traceback
        log.error("start-up failed: %s", exc)
        return 1
    if args.check_config:
        print("configuration OK")
        return 0
    try:
        service.exports.up = service.exports.watch()[0]
        if service.exports.up:
            reconcile(service, "startup")
        else:
            log.error("iSCSI target is down at start-up; will reconcile when it comes up")
    except Exception as exc:
        log.exception("start-up reconcile failed (will retry when the target restarts): %s", exc)
        service.exports.up = False
    reconciler.start()

    import uvicorn
    from .api import create_app
    from .api.guard import protocol
    app = create_app(service, metrics_public=bool(cfg["metrics_public"]))
    log.info("listening on %s:%d (%s)", cfg["host"], cfg["port"], "https" if cfg["tls_cert"] else "http")
    limits = cfg["http_limits"]

    class ReadyServer(uvicorn.Server):
        """Tells systemd READY=1 once the sockets listen (after the start-up reconcile above)."""

        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if not self.should_exit:
                notify_systemd("READY=1")

    server = ReadyServer(uvicorn.Config(
        app, host=cfg["host"], port=cfg["port"], ssl_certfile=cfg["tls_cert"], ssl_keyfile=cfg["tls_key"],
        log_config=None, access_log=bool(cfg["access_log"]), timeout_graceful_shutdown=10,
        http=protocol(limits), limit_concurrency=limits.max_connections,
        timeout_keep_alive=limits.keepalive_timeout))
    try:
        server.run()
    finally:
        reconciler.stop()
        service.close()
        service.store.close()
    if not server.started:  # e.g. the address is taken: uvicorn logged why
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
