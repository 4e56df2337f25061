"""What the routes share: the service, the caller, the tenant a call acts on, and the JSON out."""
from __future__ import annotations

import functools
import json
from typing import Annotated, Optional

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter

from ..domain import Principal, Service
from ..domain import auth, chap as chaps
from ..errors import Invalid

bearer = HTTPBearer(auto_error=False, description="a tenant or admin token")


def _query_names(route) -> frozenset:
    """The query parameters of a route and of its dependencies (kept on the route)."""
    names = getattr(route, "pvesan_query_names", None)
    if names is None:
        found, todo = set(), [route.dependant]
        while todo:
            dependant = todo.pop()
            found.update(f.alias for f in dependant.query_params)
            todo.extend(dependant.dependencies)
        names = route.pvesan_query_names = frozenset(found)
    return names


async def known_query(request: Request) -> None:
    """Refuse query parameters the route does not take: a misspelt ``?prefx=vm-`` would
    otherwise list every volume (bodies refuse unknown fields the same way)."""
    route = request.scope.get("route")
    if route is None or not request.query_params:
        return
    unknown = sorted(set(request.query_params) - _query_names(route))
    if unknown:
        raise Invalid("unknown query parameter(s) %s; this call takes %s" % (
            ", ".join(map(repr, unknown)), ", ".join(sorted(_query_names(route))) or "none"))


async def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


# async: cheap (a cached token lookup), and no thread-pool hop per dependency
async def get_principal(service: ServiceDep, creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> Principal:
    return service.auth.authenticate(creds.credentials if creds else None)


async def get_writer(p: Principal = Depends(get_principal)) -> Principal:
    auth.require_write(p)
    return p


async def get_admin(p: Principal = Depends(get_principal)) -> Principal:
    auth.require_admin(p, write=False)
    return p


async def get_admin_writer(p: Principal = Depends(get_principal)) -> Principal:
    auth.require_admin(p, write=True)
    return p


Caller = Annotated[Principal, Depends(get_principal)]
Writer = Annotated[Principal, Depends(get_writer)]
Admin = Annotated[Principal, Depends(get_admin)]
AdminWriter = Annotated[Principal, Depends(get_admin_writer)]
TenantQuery = Annotated[Optional[str], Query(max_length=63, description="tenant to act on (admin tokens only)")]


def private(p: Principal, data):
    """Read-only tokens see CHAP names, never secrets (a secret is iSCSI write access)."""
    return chaps.redact(data) if p.readonly else data


def chap_arg(chap):
    """A request's CHAP as the domain takes it: None (no CHAP) or a dict of what was given."""
    if chap is None or isinstance(chap, dict):
        return chap
    return chap.model_dump()


def raw_json(data, status: int = 200) -> Response:
    """JSON for answers without a response model (status, health)."""
    return Response(json.dumps(data, separators=(",", ":")), status_code=status, media_type="application/json")


@functools.lru_cache(maxsize=None)
def _adapter(model) -> TypeAdapter:
    return TypeAdapter(model)


def checked(model, data, status: int = 200) -> Response:
    """The answer as JSON after checking it against its response model, in the handler's own
    thread (FastAPI would check it in one more thread-pool hop: a create's answer is on the hot
    path of every Proxmox disk allocation)."""
    adapter = _adapter(model)
    return Response(adapter.dump_json(adapter.validate_python(data)), status_code=status, media_type="application/json")
