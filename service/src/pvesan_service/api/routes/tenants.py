"""Tenants (admin) and tokens."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ...errors import NotFound
from ..deps import Admin, AdminWriter, Caller, ServiceDep, TenantQuery, Writer, chap_arg, checked, private
from ..schemas import TenantCreate, TenantOut, TenantUpdate, TokenCreate, TokenCreated, TokenOut, _links

router = APIRouter()


@router.post("/api/v1/tenants", tags=["tenants"], status_code=201, response_model=TenantOut,
             responses={201: _links({"name": "$response.body#/name"}, "get_tenant", "update_tenant", "delete_tenant")})
def create_tenant(body: TenantCreate, service: ServiceDep, _p: AdminWriter):
    return checked(TenantOut, service.tenants.create(body.name, chap_arg(body.chap), body.initiators, body.quota_bytes), 201)


@router.get("/api/v1/tenants", tags=["tenants"], response_model=list[TenantOut])
def list_tenants(service: ServiceDep, p: Admin):
    return checked(list[TenantOut], private(p, service.tenants.list_()))


@router.get("/api/v1/tenants/{name}", tags=["tenants"], response_model=TenantOut)
def get_tenant(name: str, service: ServiceDep, p: Caller):
    if not p.admin and name != p.tenant:
        raise NotFound("tenant %r not found" % name)
    return checked(TenantOut, private(p, service.tenants.get(name)))


@router.patch("/api/v1/tenants/{name}", tags=["tenants"], response_model=TenantOut)
def update_tenant(name: str, body: TenantUpdate, service: ServiceDep, _p: AdminWriter):
    changes = body.model_dump(include=body.model_fields_set)
    if "chap" in changes:
        changes["chap"] = chap_arg(body.chap)
    return checked(TenantOut, service.tenants.update(name, changes))


@router.delete("/api/v1/tenants/{name}", tags=["tenants"], status_code=204)
def delete_tenant(name: str, service: ServiceDep, _p: AdminWriter):
    service.tenants.delete(name)
    return Response(status_code=204)


@router.post("/api/v1/tokens", tags=["tokens"], status_code=201, response_model=TokenCreated,
             responses={201: _links({"token_id": "$response.body#/id"}, "revoke_token")})
def create_token(body: TokenCreate, service: ServiceDep, p: Writer):
    return checked(TokenCreated, service.auth.create_token(p, body.name, body.tenant, body.readonly), 201)


@router.get("/api/v1/tokens", tags=["tokens"], response_model=list[TokenOut])
def list_tokens(service: ServiceDep, p: Caller, tenant: TenantQuery = None):
    return checked(list[TokenOut], service.auth.list_tokens(p, tenant))


@router.delete("/api/v1/tokens/{token_id}", tags=["tokens"], status_code=204)
def revoke_token(token_id: str, service: ServiceDep, p: Writer):
    service.auth.revoke_token(p, token_id)
    return Response(status_code=204)
