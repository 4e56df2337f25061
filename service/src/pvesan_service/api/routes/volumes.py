"""Volumes, their snapshots and clones (of the caller's tenant, or ``?tenant=`` for admins)."""
from __future__ import annotations

from typing import Optional, Union

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ..deps import Caller, ServiceDep, TenantQuery, Writer, chap_arg, checked, private
from ..schemas import (SNAPSHOT_LINKS, TAG, VOLUME_LINKS, CloneCreate, ReclaimOut, Rename, Resize, SnapshotCreate,
                       SnapshotOut, VolumeCreate, VolumeOut, VolumeSummary, VolumeUpdate)

router = APIRouter()


def _created(model, result: tuple) -> Response:
    """(object, created) from the domain: 201 when made now, 200 when it existed already."""
    obj, created = result
    return checked(model, obj, 201 if created else 200)


@router.post("/api/v1/volumes", tags=["volumes"], status_code=201, response_model=VolumeOut,
             responses={201: VOLUME_LINKS, 200: {"model": VolumeOut, "description": "the same volume already existed", **VOLUME_LINKS}})
def create_volume(body: VolumeCreate, service: ServiceDep, p: Writer, tenant: TenantQuery = None):
    scope = service.auth.scope(p, tenant)
    return _created(VolumeOut, service.volumes.create(scope, chap=chap_arg(body.chap), **body.model_dump(exclude={"chap"})))


@router.get("/api/v1/volumes", tags=["volumes"], response_model=list[Union[VolumeOut, VolumeSummary]])
def list_volumes(service: ServiceDep, p: Caller, tenant: TenantQuery = None, prefix: Optional[str] = Query(None, max_length=63),
                 vmid: Optional[int] = Query(None, ge=0, le=999999999), tag: Optional[str] = Query(None, pattern=TAG),
                 detail: bool = Query(False, description="full volume objects (with export) instead of summaries")):
    scope = service.auth.scope(p, tenant)
    if detail:
        return checked(list[VolumeOut], private(p, service.volumes.list_(scope, prefix, vmid, tag, detail=True)))
    # summaries: the database writes the JSON (thousands of volumes, no per-item Python work)
    return Response(service.volumes.summaries_json(scope, prefix, vmid, tag), media_type="application/json")


@router.get("/api/v1/volumes/{name}", tags=["volumes"], response_model=VolumeOut)
def get_volume(name: str, service: ServiceDep, p: Caller, tenant: TenantQuery = None):
    return checked(VolumeOut, private(p, service.volumes.get(service.auth.scope(p, tenant), name)))


@router.patch("/api/v1/volumes/{name}", tags=["volumes"], response_model=VolumeOut)
def update_volume(name: str, body: VolumeUpdate, service: ServiceDep, p: Writer, tenant: TenantQuery = None):
    changes = body.model_dump(include=body.model_fields_set)
    if "chap" in changes:
        changes["chap"] = chap_arg(body.chap)
    return checked(VolumeOut, service.volumes.update(service.auth.scope(p, tenant), name, changes))


@router.post("/api/v1/volumes/{name}/resize", tags=["volumes"], response_model=VolumeOut)
def resize_volume(name: str, body: Resize, service: ServiceDep, p: Writer, tenant: TenantQuery = None):
    return checked(VolumeOut, service.volumes.resize(service.auth.scope(p, tenant), name, body.size))


@router.post("/api/v1/volumes/{name}/reclaim", tags=["volumes"], response_model=ReclaimOut)
def reclaim_volume(name: str, service: ServiceDep, p: Writer, tenant: TenantQuery = None):
    """Free the all-zero ranges of a thin volume, online (file pools on XFS or btrfs; elsewhere 422)."""
    return checked(ReclaimOut, service.volumes.reclaim(service.auth.scope(p, tenant), name))


@router.post("/api/v1/volumes/{name}/rename", tags=["volumes"], response_model=VolumeOut)
def rename_volume(name: str, body: Rename, service: ServiceDep, p: Writer, tenant: TenantQuery = None):
    return checked(VolumeOut, service.volumes.rename(service.auth.scope(p, tenant), name, body.name))


@router.delete("/api/v1/volumes/{name}", tags=["volumes"], status_code=204)
def delete_volume(name: str, service: ServiceDep, p: Writer, tenant: TenantQuery = None,
                  cascade: bool = Query(False, description="also delete dependent clones")):
    service.volumes.delete(service.auth.scope(p, tenant), name, cascade)
    return Response(status_code=204)


@router.post("/api/v1/volumes/{name}/clone", tags=["volumes"], status_code=201, response_model=VolumeOut,
             responses={201: VOLUME_LINKS, 200: {"model": VolumeOut, "description": "the same clone already existed", **VOLUME_LINKS}})
def clone_volume(name: str, body: CloneCreate, service: ServiceDep, p: Writer, tenant: TenantQuery = None):
    scope = service.auth.scope(p, tenant)
    return _created(VolumeOut, service.snapshots.clone(scope, name, body.name, body.snapshot, body.tags))


@router.post("/api/v1/volumes/{name}/snapshots", tags=["snapshots"], status_code=201, response_model=SnapshotOut,
             responses={201: SNAPSHOT_LINKS, 200: {"model": SnapshotOut, "description": "the snapshot already existed", **SNAPSHOT_LINKS}})
def create_snapshot(name: str, body: SnapshotCreate, service: ServiceDep, p: Writer, tenant: TenantQuery = None):
    return _created(SnapshotOut, service.snapshots.create(service.auth.scope(p, tenant), name, body.name))


@router.get("/api/v1/volumes/{name}/snapshots", tags=["snapshots"], response_model=list[SnapshotOut])
def list_snapshots(name: str, service: ServiceDep, p: Caller, tenant: TenantQuery = None):
    return checked(list[SnapshotOut], service.snapshots.list_(service.auth.scope(p, tenant), name))


@router.delete("/api/v1/volumes/{name}/snapshots/{snapshot}", tags=["snapshots"], status_code=204)
def delete_snapshot(name: str, snapshot: str, service: ServiceDep, p: Writer, tenant: TenantQuery = None,
                    cascade: bool = Query(False, description="also delete clones made from it")):
    service.snapshots.delete(service.auth.scope(p, tenant), name, snapshot, cascade)
    return Response(status_code=204)


@router.post("/api/v1/volumes/{name}/snapshots/{snapshot}/rollback", tags=["snapshots"], response_model=VolumeOut)
def rollback_snapshot(name: str, snapshot: str, service: ServiceDep, p: Writer, tenant: TenantQuery = None):
    return checked(VolumeOut, service.snapshots.rollback(service.auth.scope(p, tenant), name, snapshot))
