"""Request and response shapes of the REST API (pydantic), as the OpenAPI spec shows them.

Requests are validated by FastAPI against these models; single-object responses are checked
against their response models; lists of volume summaries are made by the database as JSON (see
routes/volumes.py) and documented by ``VolumeSummary``.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, StringConstraints

from ..domain import chap as chaps
from ..domain.pools import DEFAULT_MAX_SUBSCRIPTION
from ..names import MAX_SIZE, NAME_RE, SIZE_PATTERN, SNAP_RE

NAME = NAME_RE.pattern
SNAP = SNAP_RE.pattern
TAG = r"^[A-Za-z0-9][A-Za-z0-9._:=-]{0,62}$"
INITIATOR = r"^[A-Za-z0-9][A-Za-z0-9.:/-]{0,222}$"
SIZE_DOC = "bytes, or a string with a binary unit: 512M, 10G, 1T (rounded up to whole MiB)"

Name = Field(pattern=NAME, description="1-63 characters a-z 0-9 . _ -")
Tag = Annotated[str, StringConstraints(pattern=TAG)]
Initiator = Annotated[str, StringConstraints(pattern=INITIATOR)]
SizeStr = Annotated[StrictStr, StringConstraints(pattern=SIZE_PATTERN)]
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
    max_subscription: Optional[float] = Field(
        DEFAULT_MAX_SUBSCRIPTION, gt=0, le=1000,
        description="thin volumes may provision up to this many times the usable bytes; null: no limit")
    reserve_percent: float = Field(0, ge=0, lt=100, description="percent of the pool no volume may provision")


class PoolUpdate(Strict):
    """Only the fields given change (null is a value only for max_subscription: no limit)."""
    tags: list[Tag] = _tags(None)
    max_subscription: Optional[float] = Field(None, gt=0, le=1000, description="null: no limit")
    reserve_percent: float = Field(None, ge=0, lt=100)


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
    unmap: bool = Field(description="the LUN takes UNMAP and WRITE SAME with UNMAP (thin export): discards free "
                                    "pool space")
    chap: Optional[ChapOut]


class VolumeOut(BaseModel):
    id: str
    name: str
    tenant: str
    pool: str
    service_type: Optional[str]
    size: int
    allocated: Optional[int] = Field(description="bytes the volume takes in its pool: measured now when one volume is "
                                     "shown, as last measured (every allocation_interval) in lists; null: not known")
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
    allocated: Optional[int] = Field(description="bytes the volume takes in its pool, as last measured; null: not yet")
    created_at: str


class ReclaimOut(BaseModel):
    reclaimed: int = Field(description="bytes freed in the pool")
    volume: VolumeOut


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


class TokenCreated(TokenOut):
    token: str = Field(description="the secret, returned once at creation")


class PoolOut(BaseModel):
    name: str
    kind: str
    tags: list[str]
    options: dict
    total: int
    used: int
    available: int
    error: Optional[str]
    provisioned: int = Field(description="sum of the sizes of the pool's volumes")
    allocated: int = Field(description="bytes the pool's volumes hold, as last measured")
    usable: int = Field(description="total less the reserve")
    subscription: Optional[float] = Field(description="provisioned / usable")
    max_subscription: Optional[float]
    reserve_percent: float
    alarm: int = Field(description="0: below the alarm levels, 1: warning, 2: critical")
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
                      "get_volume", "update_volume", "resize_volume", "reclaim_volume", "rename_volume", "delete_volume",
                      "clone_volume", "create_snapshot", "list_snapshots")
SNAPSHOT_LINKS = _links({"name": "$response.body#/volume", "snapshot": "$response.body#/name"},
                        "delete_snapshot", "rollback_snapshot")
