"""Pools and service types."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ..deps import AdminWriter, Caller, ServiceDep, checked
from ..schemas import PoolCreate, PoolOut, PoolUpdate, ServiceTypeCreate, ServiceTypeOut, _links

router = APIRouter()


@router.post("/api/v1/pools", tags=["pools"], status_code=201, response_model=PoolOut,
             responses={201: _links({"name": "$response.body#/name"}, "get_pool", "update_pool", "delete_pool")})
def create_pool(body: PoolCreate, service: ServiceDep, _p: AdminWriter):
    return checked(PoolOut, service.pools.create(
        body.name, body.kind, body.options, body.tags, max_subscription=body.max_subscription,
        reserve_percent=body.reserve_percent), 201)


@router.get("/api/v1/pools", tags=["pools"], response_model=list[PoolOut])
def list_pools(service: ServiceDep, _p: Caller):
    return checked(list[PoolOut], service.pools.list_())


@router.get("/api/v1/pools/{name}", tags=["pools"], response_model=PoolOut)
def get_pool(name: str, service: ServiceDep, _p: Caller):
    return checked(PoolOut, service.pools.get(name))


@router.patch("/api/v1/pools/{name}", tags=["pools"], response_model=PoolOut)
def update_pool(name: str, body: PoolUpdate, service: ServiceDep, _p: AdminWriter):
    return checked(PoolOut, service.pools.update(name, body.model_dump(include=body.model_fields_set)))


@router.delete("/api/v1/pools/{name}", tags=["pools"], status_code=204)
def delete_pool(name: str, service: ServiceDep, _p: AdminWriter):
    service.pools.delete(name)
    return Response(status_code=204)


@router.post("/api/v1/service-types", tags=["service types"], status_code=201, response_model=ServiceTypeOut,
             responses={201: _links({"name": "$response.body#/name"}, "get_service_type", "delete_service_type")})
def create_service_type(body: ServiceTypeCreate, service: ServiceDep, _p: AdminWriter):
    return checked(ServiceTypeOut, service.service_types.create(**body.model_dump()), 201)


@router.get("/api/v1/service-types", tags=["service types"], response_model=list[ServiceTypeOut])
def list_service_types(service: ServiceDep, _p: Caller):
    return checked(list[ServiceTypeOut], service.service_types.list_())


@router.get("/api/v1/service-types/{name}", tags=["service types"], response_model=ServiceTypeOut)
def get_service_type(name: str, service: ServiceDep, _p: Caller):
    return checked(ServiceTypeOut, service.service_types.get(name))


@router.delete("/api/v1/service-types/{name}", tags=["service types"], status_code=204)
def delete_service_type(name: str, service: ServiceDep, _p: AdminWriter):
    service.service_types.delete(name)
    return Response(status_code=204)
