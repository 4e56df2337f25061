"""Sizes and names as users write them."""
from __future__ import annotations

import re

from .errors import Invalid

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# Proxmox snapshot names may hold capitals (e.g. "Before_Upgrade"); the backend never sees them.
SNAP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGTP]?)(I?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
MAX_SIZE = 1 << 50  # 1 PiB: larger is a typo, and keeps every size inside a signed 64-bit column
ALIGN = 1 << 20  # sizes are rounded up to whole MiB (ZFS volblocksize, LVM extents, 4k sectors)


def parse_size(value) -> int:
    """Bytes from an int or a string such as ``10G``, ``512M``, ``1T``, ``1048576`` (binary units)."""
    if isinstance(value, bool):
        raise Invalid("size must be a number of bytes or a string like 10G")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        m = _SIZE_RE.match(value)
        if not m:
            raise Invalid("invalid size %r: use bytes or a number with K, M, G, T or P (binary units), e.g. 10G" % value)
        size = int(m.group(1)) * _UNITS[m.group(2).upper()]
    else:
        raise Invalid("size must be a number of bytes or a string like 10G")
    if size <= 0:
        raise Invalid("size must be greater than 0")
    if size > MAX_SIZE:
        raise Invalid("size %d is larger than the maximum of 1P" % size)
    return size


def align_size(size: int) -> int:
    return (size + ALIGN - 1) // ALIGN * ALIGN


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Invalid("invalid %s %r: use 1-63 characters a-z 0-9 . _ -, starting with a letter or digit" % (what, name))
    return name


def check_snap_name(name: str) -> str:
    if not isinstance(name, str) or not SNAP_RE.match(name):
        raise Invalid("invalid snapshot name %r: use 1-63 characters A-Z a-z 0-9 . _ -, starting with a letter or digit" % (name,))
    return name


def vmid_of(name: str):
    """The Proxmox VM id of ``vm-<vmid>-...`` / ``base-<vmid>-...`` names, else None."""
    m = re.match(r"^(?:vm|base)-(\d{1,9})-", name)
    return int(m.group(1)) if m else None
