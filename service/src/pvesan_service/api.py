"""REST API (FastAPI): JSON over HTTPS with bearer tokens; the OpenAPI spec is at /openapi.json.

Handlers are thin: validate, authorise, call the core, return JSON.  Every error is a 4xx with a
``detail`` that says what to fix (or 503 when the target daemon/database is unavailable).
Responses are built as plain JSON (no per-item model validation) so that listing thousands of
volumes stays fast; the response models below document the shapes in the spec.
"""
from __future__ import annotations

import json
import logging
from typing import Annotated, Literal, Optional, Union

from fastapi import Depends, FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .backends.base import BackendError, NotFound as BackendNotFound, NotSupported
from . import chap as chaps
from .core import Principal, Service
from .errors import ServiceError
from .reconciler import reconcile
from .store import StoreError
from .targets.base import TargetError
from .units import MAX_SIZE

log = logging.getLogger("pvesan.api")

NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"
SNAP = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
TAG = r"^[A-Za-z0-9][A-Za-z0-9._:=-]{0,62}$"
INITIATOR = r"^[A-Za-z0-9][A-Za-z0-9.:/-]{0,222}$"
SIZE_DOC = "bytes, or a string with a binary unit: 512M, 10G, 1T (rounded up to whole MiB)"

Name = Field(pattern=NAME, description="1-63 characters a-z 0-9 . _ -")
Tag = Annotated[str, StringConstraints(pattern=TAG)]
Initiator = Annotated[str, StringConstraints(pattern=INITIATOR)]
SizeStr = Annotated[StrictStr, StringConstraints(pattern=r"^[0-9]{1,16}[KMGTPkmgtp]?(iB|IB|B|b)?$")]
Size = Union[Annotated[StrictInt, Field(ge=1, le=MAX_SIZE)], SizeStr]
ChapUser = Annotated[str, StringConstraints(pattern=chaps.USER_RE.pattern)]
ChapSecret = Annotated[str, StringConstraints(pattern=chaps.SECRET_RE.pattern)]
SECRET_DOC = "12-128 printable characters without spaces or commas; omit it for a generated one"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MutualChapIn(Strict):
    user: Optional[ChapUser] = Field(None, description="omit for a generated (or the current) name")
    password: Optional[ChapSecret] = Field(None, description=SECRET_DOC)


class ChapIn(Strict):
    user: Optional[ChapUser] = Field(None, description="a name no other tenant uses; omit for a generated (or the current) one")
    password: Optional[ChapSecret] = Field(None, description=SECRET_DOC)
    mutual: Optional[MutualChapIn] = Field(None, description="credentials the target shows the initiator (mutual CHAP)")


def _tags(default=None, desc="tags"):
    return Field(default, max_length=32, description=desc)


ACL_DOC = "IQNs or IP addresses allowed to log in and to discover the targets; [\"ALL\"]: any initiator, []: none"


class TenantCreate(Strict):
    name: str = Name
    chap: Optional[ChapIn] = Field(default_factory=dict, description="CHAP credentials used by every volume of the "
                                   "tenant; omitted: generated ones, null: no CHAP")
    initiators: list[Initiator] = Field(default_factory=list, max_length=256, description="default initiator ACL: " + ACL_DOC)
    quota_bytes: Optional[int] = Field(None, ge=0, le=MAX_SIZE)


class TenantUpdate(Strict):
    chap: Optional[ChapIn] = None
    initiators: Optional[list[Initiator]] = Field(None, max_length=256)
    quota_bytes: Optional[int] = Field(None, ge=0, le=MAX_SIZE)


class TokenCreate(Strict):
    name: str = Name
    tenant: Optional[str] = Field(None, max_length=63, description="tenant the token acts for; omit for an admin token")
    readonly: bool = False


class PoolCreate(Strict):
    name: str = Name
    kind: Literal["file", "zfs", "lvmthin"]
    options: dict[Annotated[str, StringConstraints(max_length=64)], Union[Annotated[str, StringConstraints(max_length=1024)], int, bool]] = Field(
        default_factory=dict, max_length=16,
        description="file: path; zfs: dataset, volblocksize, compression; lvmthin: vg, thinpool")
    tags: list[Tag] = _tags([])


class PoolUpdate(Strict):
    tags: list[Tag] = _tags([])


class ServiceTypeCreate(Strict):
    name: str = Name
    description: str = Field("", max_length=256)
    pool_tags: list[Tag] = _tags([], "a pool must carry all these tags")
    block_size: Literal[512, 4096] = 512
    thin: bool = True
    chap: bool = False
    default: bool = False


class VolumeCreate(Strict):
    name: str = Name
    size: Size = Field(description=SIZE_DOC)
    service_type: Optional[str] = Field(None, max_length=63)
    query_include: list[Tag] = _tags([], "the pool must carry all these tags")
    query_exclude: list[Tag] = _tags([], "the pool must carry none of these tags")
    tags: list[Tag] = _tags([])
    initiators: Optional[list[Initiator]] = Field(None, max_length=256, description="initiator ACL (" + ACL_DOC + "); omit to use the tenant's")
    chap: Optional[ChapIn] = Field(None, description="per-volume CHAP ({}: generated); omit to use the tenant's")


class VolumeUpdate(Strict):
    tags: Optional[list[Tag]] = _tags(None)
    initiators: Optional[list[Initiator]] = Field(None, max_length=256, description="null: use the tenant's ACL")
    chap: Optional[ChapIn] = Field(None, description="null: use the tenant's CHAP")


class Resize(Strict):
    size: Size = Field(description="new absolute size (grow only); " + SIZE_DOC)


class Rename(Strict):
    name: str = Name


class SnapshotCreate(Strict):
    name: str = Field(pattern=SNAP)


class CloneCreate(Strict):
    name: str = Name
    snapshot: Optional[str] = Field(None, pattern=SNAP, description="source snapshot; omit to clone a template's base")
    tags: Optional[list[Tag]] = _tags(None)


# ---------------------------------------------------------------- response shapes (for the spec)
class MutualChapOut(BaseModel):
    user: str
    password: Optional[str] = Field(description="null for read-only tokens")


class ChapOut(BaseModel):
    user: str
    password: Optional[str] = Field(description="null for read-only tokens")
    mutual: Optional[MutualChapOut] = None


class ExportOut(BaseModel):
    iqn: str
    lun: int
    portals: list[str]
    urls: list[str]
    initiators: list[str]
    wwid: Optional[str] = Field(None, description="the WWID initiators see for the LUN (multipath map name); null when the target driver cannot tell")
    chap: Optional[ChapOut]


class VolumeOut(BaseModel):
    id: str
    name: str
    tenant: str
    pool: str
    service_type: Optional[str]
    size: int
    allocated: Optional[int] = Field(description="bytes the volume's data takes in its pool; null in lists and when the pool cannot tell")
    thin: bool
    block_size: int
    vmid: Optional[int]
    tags: list[str]
    state: str
    parent: Optional[str]
    parent_snapshot: Optional[str]
    export: ExportOut
    created_at: str
    updated_at: str


class VolumeSummary(BaseModel):
    id: str
    name: str
    size: int
    vmid: Optional[int]
    tags: list[str]
    state: str
    pool: Optional[str]
    parent: Optional[str]
    parent_snapshot: Optional[str]
    iqn: str
    created_at: str


class SnapshotOut(BaseModel):
    name: str
    id: str
    volume: str
    state: str
    created_at: str


class TenantOut(BaseModel):
    name: str
    chap: Optional[ChapOut]
    initiators: list[str]
    quota_bytes: Optional[int]
    created_at: str


class TokenOut(BaseModel):
    id: str
    name: str
    tenant: Optional[str]
    readonly: bool
    created_at: str
    token: Optional[str] = Field(None, description="the secret, returned once at creation")


class PoolOut(BaseModel):
    name: str
    kind: str
    tags: list[str]
    options: dict
    total: int
    used: int
    available: int
    error: Optional[str]
    created_at: str


class ServiceTypeOut(BaseModel):
    name: str
    description: str
    pool_tags: list[str]
    block_size: int
    thin: bool
    chap: bool
    default: bool
    created_at: str


class Error(BaseModel):
    detail: Union[str, list]


ERRORS = {c: {"model": Error} for c in (400, 401, 403, 404, 409, 422, 503)}


def _links(params: dict, *operations: str) -> dict:
    """OpenAPI links from a create's answer to the operations on the new object (operation ids are
    the handlers' names): clients and stateful fuzzers follow them."""
    return {"links": {op: {"operationId": op, "parameters": params} for op in operations}}


VOLUME_LINKS = _links({"name": "$response.body#/name", "query.tenant": "$response.body#/tenant"},
                      "get_volume", "update_volume", "resize_volume", "rename_volume", "delete_volume", "clone_volume",
                      "create_snapshot", "list_snapshots")
SNAPSHOT_LINKS = _links({"name": "$response.body#/volume", "snapshot": "$response.body#/name"},
                        "delete_snapshot", "rollback_snapshot")


def create_app(service: Service, *, metrics_public: bool = False) -> FastAPI:
    app = FastAPI(title="pvesan volume service", version=__version__,
                  description="Thin volumes, snapshots and clones exported over iSCSI (one target per volume, LUN 1).",
                  responses=ERRORS, generate_unique_id_function=lambda route: route.name)
    app.state.service = service
    bearer = HTTPBearer(auto_error=False, description="a tenant or admin token")

    def J(data, status: int = 200) -> Response:
        return Response(json.dumps(data, separators=(",", ":")), status_code=status, media_type="application/json")

    def private(p: Principal, data):
        """Read-only tokens see CHAP names, never secrets (a secret is iSCSI write access)."""
        return chaps.redact(data) if p.readonly else data

    def chap_arg(chap):
        """A request's CHAP as the core takes it: None (no CHAP) or a dict of what was given."""
        if chap is None or isinstance(chap, dict):
            return chap
        return chap.model_dump()

    # ------------------------------------------------------------ errors: always 4xx/503 with a reason
    @app.exception_handler(ServiceError)
    async def _service_error(_req, exc: ServiceError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(NotSupported)
    async def _not_supported(_req, exc):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(BackendNotFound)
    async def _backend_missing(_req, exc):
        return JSONResponse({"detail": "backing storage is missing: %s" % exc}, status_code=409)

    @app.exception_handler(BackendError)
    async def _backend_error(_req, exc):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(TargetError)
    async def _target_error(_req, exc):
        log.error("iSCSI target error: %s", exc)
        return JSONResponse({"detail": "iSCSI target: %s" % exc}, status_code=503)

    @app.exception_handler(StoreError)
    async def _store_error(_req, exc):
        log.error("database error: %s", exc)
        return JSONResponse({"detail": "database: %s" % exc}, status_code=503)

    @app.exception_handler(OSError)
    async def _os_error(_req, exc: OSError):
        # the host ran out of something (processes, memory, file descriptors): retry later
        log.error("host resource error: %s", exc)
        return JSONResponse({"detail": "storage host error, retry later: %s" % (exc.strerror or exc)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req, exc: RequestValidationError):
        errs = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        return JSONResponse({"detail": errs}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    # ------------------------------------------------------------ auth
    # async: cheap (cached token lookup), and no thread-pool hop per dependency
    async def principal(creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> Principal:
        return service.authenticate(creds.credentials if creds else None)

    async def writer(p: Principal = Depends(principal)) -> Principal:
        service.require_write(p)
        return p

    async def admin(p: Principal = Depends(principal)) -> Principal:
        service.require_admin(p, write=False)
        return p

    async def admin_writer(p: Principal = Depends(principal)) -> Principal:
        service.require_admin(p, write=True)
        return p

    TenantQ = Query(None, max_length=63, description="tenant to act on (admin tokens only)")

    # ------------------------------------------------------------ health, metrics, status
    @app.get("/healthz", tags=["health"])
    def healthz():
        h = service.healthy()
        return J(h, 200 if h["database"] else 503)

    @app.get("/metrics", tags=["health"], response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    def metrics(creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)):
        if not metrics_public:
            service.require_admin(service.authenticate(creds.credentials if creds else None), write=False)
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/api/v1/status", tags=["status"])
    def status(p: Principal = Depends(principal), tenant: Optional[str] = TenantQ,
               service_type: Optional[str] = Query(None, max_length=63),
               query_include: list[str] = Query([], description="repeat or comma-separate"),
               query_exclude: list[str] = Query([], description="repeat or comma-separate")):
        def split(vals):
            return [x for v in vals for x in v.split(",") if x]
        return J(service.status(p, tenant, service_type, split(query_include), split(query_exclude)))

    @app.get("/api/v1/whoami", tags=["status"])
    def whoami(p: Principal = Depends(principal)):
        return J({"admin": p.admin, "tenant": p.tenant, "readonly": p.readonly, "token_id": p.token_id})

    @app.post("/api/v1/reconcile", tags=["status"])
    def run_reconcile(_p: Principal = Depends(admin_writer)):
        return J(reconcile(service, "api"))

    # ------------------------------------------------------------ tenants
    @app.post("/api/v1/tenants", tags=["tenants"], status_code=201, response_model=TenantOut,
              responses={201: _links({"name": "$response.body#/name"}, "get_tenant", "update_tenant", "delete_tenant")})
    def create_tenant(body: TenantCreate, _p: Principal = Depends(admin_writer)):
        return J(service.create_tenant(body.name, chap_arg(body.chap), body.initiators,
                                       body.quota_bytes), 201)

    @app.get("/api/v1/tenants", tags=["tenants"], response_model=list[TenantOut])
    def list_tenants(p: Principal = Depends(admin)):
        return J(private(p, service.list_tenants()))

    @app.get("/api/v1/tenants/{name}", tags=["tenants"], response_model=TenantOut)
    def get_tenant(name: str, p: Principal = Depends(principal)):
        if not p.admin and name != p.tenant:
            return J({"detail": "tenant %r not found" % name}, 404)
        return J(private(p, service.get_tenant(name)))

    @app.patch("/api/v1/tenants/{name}", tags=["tenants"], response_model=TenantOut)
    def update_tenant(name: str, body: TenantUpdate, _p: Principal = Depends(admin_writer)):
        changes = body.model_dump(include=body.model_fields_set)
        if "chap" in changes:
            changes["chap"] = chap_arg(body.chap)
        return J(service.update_tenant(name, changes))

    @app.delete("/api/v1/tenants/{name}", tags=["tenants"], status_code=204)
    def delete_tenant(name: str, _p: Principal = Depends(admin_writer)):
        service.delete_tenant(name)
        return Response(status_code=204)

    # ------------------------------------------------------------ tokens
    @app.post("/api/v1/tokens", tags=["tokens"], status_code=201, response_model=TokenOut,
              responses={201: _links({"token_id": "$response.body#/id"}, "revoke_token")})
    def create_token(body: TokenCreate, p: Principal = Depends(writer)):
        return J(service.create_token(p, body.name, body.tenant, body.readonly), 201)

    @app.get("/api/v1/tokens", tags=["tokens"], response_model=list[TokenOut])
    def list_tokens(p: Principal = Depends(principal), tenant: Optional[str] = TenantQ):
        return J(service.list_tokens(p, tenant))

    @app.delete("/api/v1/tokens/{token_id}", tags=["tokens"], status_code=204)
    def revoke_token(token_id: str, p: Principal = Depends(writer)):
        service.revoke_token(p, token_id)
        return Response(status_code=204)

    # ------------------------------------------------------------ pools
    @app.post("/api/v1/pools", tags=["pools"], status_code=201, response_model=PoolOut,
              responses={201: _links({"name": "$response.body#/name"}, "get_pool", "update_pool", "delete_pool")})
    def create_pool(body: PoolCreate, _p: Principal = Depends(admin_writer)):
        return J(service.create_pool(body.name, body.kind, body.options, body.tags), 201)

    @app.get("/api/v1/pools", tags=["pools"], response_model=list[PoolOut])
    def list_pools(_p: Principal = Depends(principal)):
        return J(service.list_pools())

    @app.get("/api/v1/pools/{name}", tags=["pools"], response_model=PoolOut)
    def get_pool(name: str, _p: Principal = Depends(principal)):
        return J(service.get_pool(name))

    @app.patch("/api/v1/pools/{name}", tags=["pools"], response_model=PoolOut)
    def update_pool(name: str, body: PoolUpdate, _p: Principal = Depends(admin_writer)):
        return J(service.update_pool(name, body.tags))

    @app.delete("/api/v1/pools/{name}", tags=["pools"], status_code=204)
    def delete_pool(name: str, _p: Principal = Depends(admin_writer)):
        service.delete_pool(name)
        return Response(status_code=204)

    # ------------------------------------------------------------ service types
    @app.post("/api/v1/service-types", tags=["service types"], status_code=201, response_model=ServiceTypeOut,
              responses={201: _links({"name": "$response.body#/name"}, "get_service_type", "delete_service_type")})
    def create_service_type(body: ServiceTypeCreate, _p: Principal = Depends(admin_writer)):
        return J(service.create_service_type(body.name, body.description, body.pool_tags, body.block_size, body.thin,
                                             body.chap, body.default), 201)

    @app.get("/api/v1/service-types", tags=["service types"], response_model=list[ServiceTypeOut])
    def list_service_types(_p: Principal = Depends(principal)):
        return J(service.list_service_types())

    @app.get("/api/v1/service-types/{name}", tags=["service types"], response_model=ServiceTypeOut)
    def get_service_type(name: str, _p: Principal = Depends(principal)):
        return J(service.get_service_type(name))

    @app.delete("/api/v1/service-types/{name}", tags=["service types"], status_code=204)
    def delete_service_type(name: str, _p: Principal = Depends(admin_writer)):
        service.delete_service_type(name)
        return Response(status_code=204)

    # ------------------------------------------------------------ volumes
    @app.post("/api/v1/volumes", tags=["volumes"], status_code=201, response_model=VolumeOut,
              responses={201: VOLUME_LINKS, 200: {"model": VolumeOut, "description": "the same volume already existed", **VOLUME_LINKS}})
    def create_volume(body: VolumeCreate, p: Principal = Depends(writer), tenant: Optional[str] = TenantQ):
        vol, created = service.create_volume(
            service.scope(p, tenant), body.name, body.size, body.service_type, body.query_include, body.query_exclude,
            body.tags, body.initiators, chap_arg(body.chap))
        return J(vol, 201 if created else 200)

    @app.get("/api/v1/volumes", tags=["volumes"], response_model=list[Union[VolumeOut, VolumeSummary]])
    def list_volumes(p: Principal = Depends(principal), tenant: Optional[str] = TenantQ,
                     prefix: Optional[str] = Query(None, max_length=63),
                     vmid: Optional[int] = Query(None, ge=0, le=999999999),
                     tag: Optional[str] = Query(None, pattern=TAG),
                     detail: bool = Query(False, description="full volume objects (with export) instead of summaries")):
        scope = service.scope(p, tenant)
        if detail:
            return J(private(p, service.list_volumes(scope, prefix, vmid, tag, True)))
        # summaries: the database writes the JSON (thousands of volumes, no per-item Python work)
        return Response(service.list_volumes_json(scope, prefix, vmid, tag), media_type="application/json")

    @app.get("/api/v1/volumes/{name}", tags=["volumes"], response_model=VolumeOut)
    def get_volume(name: str, p: Principal = Depends(principal), tenant: Optional[str] = TenantQ):
        return J(private(p, service.get_volume(service.scope(p, tenant), name)))

    @app.patch("/api/v1/volumes/{name}", tags=["volumes"], response_model=VolumeOut)
    def update_volume(name: str, body: VolumeUpdate, p: Principal = Depends(writer), tenant: Optional[str] = TenantQ):
        changes = body.model_dump(include=body.model_fields_set)
        if "chap" in changes:
            changes["chap"] = chap_arg(body.chap)
        return J(service.update_volume(service.scope(p, tenant), name, changes))

    @app.post("/api/v1/volumes/{name}/resize", tags=["volumes"], response_model=VolumeOut)
    def resize_volume(name: str, body: Resize, p: Principal = Depends(writer), tenant: Optional[str] = TenantQ):
        return J(service.resize_volume(service.scope(p, tenant), name, body.size))

    @app.post("/api/v1/volumes/{name}/rename", tags=["volumes"], response_model=VolumeOut)
    def rename_volume(name: str, body: Rename, p: Principal = Depends(writer), tenant: Optional[str] = TenantQ):
        return J(service.rename_volume(service.scope(p, tenant), name, body.name))

    @app.delete("/api/v1/volumes/{name}", tags=["volumes"], status_code=204)
    def delete_volume(name: str, p: Principal = Depends(writer), tenant: Optional[str] = TenantQ,
                      cascade: bool = Query(False, description="also delete dependent clones")):
        service.delete_volume(service.scope(p, tenant), name, cascade)
        return Response(status_code=204)

    @app.post("/api/v1/volumes/{name}/clone", tags=["volumes"], status_code=201, response_model=VolumeOut,
              responses={201: VOLUME_LINKS, 200: {"model": VolumeOut, "description": "the same clone already existed", **VOLUME_LINKS}})
    def clone_volume(name: str, body: CloneCreate, p: Principal = Depends(writer), tenant: Optional[str] = TenantQ):
        vol, created = service.clone_volume(service.scope(p, tenant), name, body.name, body.snapshot, body.tags)
        return J(vol, 201 if created else 200)

    # ------------------------------------------------------------ snapshots
    @app.post("/api/v1/volumes/{name}/snapshots", tags=["snapshots"], status_code=201, response_model=SnapshotOut,
              responses={201: SNAPSHOT_LINKS, 200: {"model": SnapshotOut, "description": "the snapshot already existed", **SNAPSHOT_LINKS}})
    def create_snapshot(name: str, body: SnapshotCreate, p: Principal = Depends(writer), tenant: Optional[str] = TenantQ):
        snap, created = service.create_snapshot(service.scope(p, tenant), name, body.name)
        return J(snap, 201 if created else 200)

    @app.get("/api/v1/volumes/{name}/snapshots", tags=["snapshots"], response_model=list[SnapshotOut])
    def list_snapshots(name: str, p: Principal = Depends(principal), tenant: Optional[str] = TenantQ):
        return J(service.list_snapshots(service.scope(p, tenant), name))

    @app.delete("/api/v1/volumes/{name}/snapshots/{snapshot}", tags=["snapshots"], status_code=204)
    def delete_snapshot(name: str, snapshot: str, p: Principal = Depends(writer), tenant: Optional[str] = TenantQ,
                        cascade: bool = Query(False, description="also delete clones made from it")):
        service.delete_snapshot(service.scope(p, tenant), name, snapshot, cascade)
        return Response(status_code=204)

    @app.post("/api/v1/volumes/{name}/snapshots/{snapshot}/rollback", tags=["snapshots"], response_model=VolumeOut)
    def rollback_snapshot(name: str, snapshot: str, p: Principal = Depends(writer), tenant: Optional[str] = TenantQ):
        return J(service.rollback_snapshot(service.scope(p, tenant), name, snapshot))

    return app
