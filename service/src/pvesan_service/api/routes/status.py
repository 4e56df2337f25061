"""Health, metrics, capacity status, the caller's identity, an on-demand reconcile."""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials

from ...domain import auth
from ...reconciler import reconcile
from ..deps import AdminWriter, Caller, ServiceDep, TenantQuery, bearer, raw_json

router = APIRouter()


@router.get("/healthz", tags=["health"])
def healthz(service: ServiceDep):
    h = service.healthy()
    return raw_json(h, 200 if h["database"] else 503)


@router.get("/metrics", tags=["health"], response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request, service: ServiceDep, creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)):
    if not request.app.state.metrics_public:
        auth.require_admin(service.auth.authenticate(creds.credentials if creds else None), write=False)
    return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")


def _split(values: list[str]) -> list[str]:
    """Repeated and/or comma-separated query values, as storage.cfg string-lists are written."""
    return [x for v in values for x in v.split(",") if x]


@router.get("/api/v1/status", tags=["status"])
def status(service: ServiceDep, p: Caller, tenant: TenantQuery = None,
           service_type: Optional[str] = Query(None, max_length=63),
           query_include: list[str] = Query([], description="repeat or comma-separate"),
           query_exclude: list[str] = Query([], description="repeat or comma-separate")):
    return raw_json(service.status(p, tenant, service_type, _split(query_include), _split(query_exclude)))


@router.get("/api/v1/whoami", tags=["status"])
def whoami(p: Caller):
    return raw_json({"admin": p.admin, "tenant": p.tenant, "readonly": p.readonly, "token_id": p.token_id})


@router.post("/api/v1/reconcile", tags=["status"])
def run_reconcile(service: ServiceDep, _p: AdminWriter):
    return raw_json(reconcile(service, "api"))
