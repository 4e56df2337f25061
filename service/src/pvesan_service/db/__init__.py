"""Persistence: the state store and one repository module per table, which own every SQL statement.

Repository functions take an open transaction (``with store.tx() as t``): the domain layer decides
what belongs in one transaction, the repositories say how it is stored.
"""
from . import chap_accounts, meta, pools, service_types, tenants, tokens, volumes
from .store import Store, StoreError, Tx, UniqueViolation, from_json, now, to_json

__all__ = ["chap_accounts", "meta", "pools", "service_types", "tenants", "tokens", "volumes",
           "Store", "StoreError", "Tx", "UniqueViolation", "from_json", "now", "to_json"]
