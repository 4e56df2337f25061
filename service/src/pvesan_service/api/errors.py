"""Every error becomes a 4xx with a ``detail`` that says what to fix, or a 503 when the target
daemon, the database or the host cannot serve now; never a 500 for anything a client sends."""
from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..backends import BackendError, NotInPool, NotSupported
from ..db import StoreError
from ..errors import ServiceError
from ..targets.base import TargetError

log = logging.getLogger("pvesan.http")


def _detail(status: int, detail, headers=None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_req, exc: ServiceError):
        return _detail(exc.status, exc.message)

    @app.exception_handler(NotSupported)
    async def _not_supported(_req, exc):
        return _detail(422, str(exc))

    @app.exception_handler(NotInPool)
    async def _not_in_pool(_req, exc):
        return _detail(409, "backing storage is missing: %s" % exc)

    @app.exception_handler(BackendError)
    async def _backend_error(_req, exc):
        return _detail(409, str(exc))

    @app.exception_handler(TargetError)
    async def _target_error(_req, exc):
        log.error("iSCSI target error: %s", exc)
        return _detail(503, "iSCSI target: %s" % exc)

    @app.exception_handler(StoreError)
    async def _store_error(_req, exc):
        log.error("database error: %s", exc)
        return _detail(503, "database: %s" % exc)

    @app.exception_handler(OSError)
    async def _os_error(_req, exc: OSError):
        # the host ran out of something (processes, memory, file descriptors): retry later
        log.error("host resource error: %s", exc)
        return _detail(503, "storage host error, retry later: %s" % (exc.strerror or exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_req, exc: RequestValidationError):
        return _detail(422, [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                             for e in exc.errors()])

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req, exc: StarletteHTTPException):
        return _detail(exc.status_code, exc.detail, getattr(exc, "headers", None))
