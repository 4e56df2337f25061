"""Sizes and names as users write them: the rules of the shared API client (shared/_pvesan_client.py,
the one declaration the collection's modules and the CLI use too), with the service's errors."""
from __future__ import annotations

import re

from .errors import Invalid
from .shared import _pvesan_client as rules

NAME_RE = re.compile(rules.NAME_PATTERN)
# Proxmox snapshot names may hold capitals (e.g. "Before_Upgrade"); the backend never sees them.
SNAP_RE = re.compile(rules.SNAP_PATTERN)
MAX_SIZE = rules.MAX_SIZE
SIZE_PATTERN = rules.SIZE_PATTERN
ALIGN = 1 << 20  # sizes are rounded up to whole MiB (ZFS volblocksize, LVM extents, 4k sectors)


def parse_size(value) -> int:
    """Bytes from an int or a string such as ``10G``, ``512M``, ``1T``, ``1048576`` (binary units)."""
    try:
        return rules.parse_size(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


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
