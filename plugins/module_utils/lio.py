# -*- coding: utf-8 -*-
# Copyright (c) 2026, pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Drive the Linux kernel iSCSI target (LIO) through rtslib-fb (``python3-rtslib-fb``).

Shared by the ``iscsi_target`` module and the bundled volume service (through a symlink).
rtslib-fb is imported lazily: this file loads without it, and every call that needs it raises
``LioError`` saying what to install.  Python 3.8+, standard library plus rtslib-fb.

Same declarative dicts as ``tgtadm.py``::

    {"iqn": "...", "tid": None,             # LIO has no tid; the TPG is always 1
     "luns": [{"lun": 1, "path": "/srv/v.img", "serial": "v0a1b", "vendor": None, "product": None,
               "readonly": False, "write_cache": True, "size": 67108864}],
     "initiators": ["iqn.1993-08.org.debian:01:abc"],   # [] = any initiator (demo mode), unless any_initiator is False
     "any_initiator": False,                             # desired only: demo mode (any initiator, TPG-wide CHAP)
     "allow_all": False,                                 # read only: the TPG is in demo mode
     "chap": {"user": "u", "password": "p"} | None,
     "mutual_chap": {"user": "m", "password": "q"} | None,
     "portals": ["0.0.0.0:3260"],
     "attributes": {"login_timeout": "15"}}              # TPG attributes

- ``read_targets()`` -> ``{iqn: dict}`` of every iSCSI target; ``read_target(iqn)`` -> dict or None.
- ``apply_target(desired)`` creates or updates one target in place, returns the changes made.
- ``remove_target(iqn)`` deletes a target and the storage objects only it used.
- ``refresh_lun(iqn, lun)`` makes a grown backing file visible (re-creates the LUN).

LIO differences from tgt that callers see: ACLs take initiator IQNs only (no IP addresses); in
demo mode (``any_initiator``, by default when there is no initiator list) any initiator may log in
with TPG-wide CHAP; otherwise each ACL carries the CHAP credentials, and discovery
(SendTargets) shows the target only to initiators with an ACL (``demo_mode_discovery`` 0).  LIO reads passwords back, so reads include them.  The data LUN
is 1 as with tgt, so initiators use the same ``iscsi://<portal>/<iqn>/1`` URL.  Files become
``fileio`` storage objects, block devices ``block`` ones, named ``pvesan-<serial>``.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type  # pylint: disable=invalid-name

import os
import re
import stat

DATA_LUN = 1
TPG_TAG = 1


class LioError(Exception):
    """An LIO operation failed or rtslib-fb is missing; the message says what to do."""


def rtslib():
    """The rtslib_fb module (imported on first use)."""
    try:
        import rtslib_fb  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise LioError("the LIO target needs rtslib-fb: install the Debian package python3-rtslib-fb "
                       "(or pip install rtslib-fb) (%s)" % exc)
    return rtslib_fb


def _so_name(serial):
    return "pvesan-" + re.sub(r"[^A-Za-z0-9_-]", "_", serial or "volume")[:48]


def _fabric(rts):
    try:
        return rts.FabricModule("iscsi")
    except Exception as exc:  # rtslib raises RTSLibError when configfs/target_core is missing
        raise LioError("LIO iSCSI fabric unavailable (is the target_core_mod/iscsi_target_mod kernel module loaded "
                       "and configfs mounted?): %s" % exc)


def _lookup(rts, iqn):
    try:
        return rts.Target(_fabric(rts), iqn, mode="lookup")
    except rts.RTSLibNotInCFS:
        return None


def _tpg_of(target):
    for tpg in target.tpgs:
        if tpg.tag == TPG_TAG:
            return tpg
    return None


def _chap(userid, password):
    return {"user": userid, "password": password} if userid else None


def _target_dict(target):
    tpg = _tpg_of(target)
    out = {"iqn": target.wwn, "tid": None, "luns": [], "initiators": [], "chap": None, "mutual_chap": None,
           "portals": [], "attributes": {}, "allow_all": False}
    if tpg is None:
        return out
    for lun in sorted(tpg.luns, key=lambda x: x.lun):
        so = lun.storage_object
        out["luns"].append({"lun": lun.lun, "path": so.udev_path, "serial": so.wwn, "vendor": None, "product": None,
                            "readonly": _readonly(tpg, so), "write_cache": getattr(so, "write_back", None),
                            "size": getattr(so, "size", None), "backstore": so.plugin, "name": so.name})
    acls = list(tpg.node_acls)
    out["initiators"] = sorted(acl.node_wwn for acl in acls)
    auth = acls[0] if acls else tpg  # demo mode: TPG-wide credentials
    out["chap"] = _chap(auth.chap_userid, auth.chap_password)
    out["mutual_chap"] = _chap(auth.chap_mutual_userid, auth.chap_mutual_password)
    out["portals"] = sorted("%s:%s" % (p.ip_address, p.port) for p in tpg.network_portals)
    out["attributes"] = {"authentication": tpg.get_attribute("authentication"),
                         "generate_node_acls": tpg.get_attribute("generate_node_acls")}
    out["allow_all"] = out["attributes"]["generate_node_acls"] == "1"
    return out


def _readonly(tpg, so):
    if getattr(so, "plugin", "") == "block" and getattr(so, "readonly", False):
        return True
    return tpg.get_attribute("demo_mode_write_protect") == "1" if not list(tpg.node_acls) else any(
        m.write_protect for acl in tpg.node_acls for m in acl.mapped_luns)


def read_targets():
    """Every LIO iSCSI target as ``{iqn: dict}``."""
    rts = rtslib()
    return dict((t.wwn, _target_dict(t)) for t in _fabric(rts).targets)


def read_target(iqn):
    """One target as a dict, or None."""
    rts = rtslib()
    target = _lookup(rts, iqn)
    return _target_dict(target) if target is not None else None


def _storage_object(rts, lun):
    """Find or create the storage object of a LUN dict (fileio for files, block for devices)."""
    path, name = lun["path"], _so_name(lun.get("serial"))
    try:
        is_block = stat.S_ISBLK(os.stat(path).st_mode)
    except OSError as exc:
        raise LioError("backing store %s is missing: %s" % (path, exc))
    for so in rts.RTSRoot().storage_objects:
        if so.name == name and so.plugin == ("block" if is_block else "fileio"):
            if so.udev_path != path:
                raise LioError("storage object %s already serves %s, not %s" % (name, so.udev_path, path))
            return so
    if is_block:
        return rts.BlockStorageObject(name, dev=path, readonly=bool(lun.get("readonly")), wwn=lun.get("serial"))
    # rtslib wants the size of a file backstore (LIO fixes it at creation: refresh_lun re-creates)
    return rts.FileIOStorageObject(name, dev=path, size=os.path.getsize(path), write_back=lun.get("write_cache") is not False,
                                   wwn=lun.get("serial"))


def _set_chap(obj, chap, mutual):
    obj.chap_userid = chap["user"] if chap else ""
    obj.chap_password = chap["password"] if chap else ""
    obj.chap_mutual_userid = mutual["user"] if mutual else ""
    obj.chap_mutual_password = mutual["password"] if mutual else ""


def apply_target(desired):
    """Create or update one target to match ``desired``; returns the list of changes.  A target
    this call created is removed again when a later step fails (nothing half-made is left)."""
    rts = rtslib()
    created = _lookup(rts, desired["iqn"]) is None
    try:
        return _apply(rts, desired)
    except Exception:
        if created:
            remove_target(desired["iqn"])
        raise


def _apply(rts, desired):
    changes = []
    for initiator in desired.get("initiators") or []:
        if not initiator.startswith(("iqn.", "eui.", "naa.")):
            raise LioError("LIO ACLs take initiator names (iqn./eui./naa.), not addresses: %r" % initiator)
    before = read_target(desired["iqn"])
    target = _lookup(rts, desired["iqn"])
    if target is None:
        target = rts.Target(_fabric(rts), desired["iqn"], mode="create")
        changes.append("target %s created" % desired["iqn"])
    tpg = _tpg_of(target) or rts.TPG(target, TPG_TAG, mode="create")

    want_luns = dict((lu["lun"], lu) for lu in desired.get("luns") or [])
    for lun in list(tpg.luns):
        want = want_luns.get(lun.lun)
        so = lun.storage_object
        if want is None or so.udev_path != want["path"] or so.wwn != want.get("serial"):
            lun.delete()
            if not list(so.attached_luns):
                so.delete()
            changes.append("lun %s removed" % lun.lun)
    have = dict((lun.lun, lun) for lun in tpg.luns)
    for number, want in sorted(want_luns.items()):
        if number not in have:
            have[number] = rts.LUN(tpg, lun=number, storage_object=_storage_object(rts, want))
            changes.append("lun %s created" % number)

    initiators = desired.get("initiators") or []
    demo = desired["any_initiator"] if "any_initiator" in desired else not initiators
    if demo:
        initiators = []  # any initiator: per-initiator ACLs would add nothing
    chap, mutual = desired.get("chap"), desired.get("mutual_chap")
    readonly = any(lu.get("readonly") for lu in want_luns.values())
    tpg.set_attribute("generate_node_acls", "1" if demo else "0")
    tpg.set_attribute("cache_dynamic_acls", "1" if demo else "0")
    # without it LIO lists the target in SendTargets to every initiator, ACL or not
    tpg.set_attribute("demo_mode_discovery", "1" if demo else "0")
    tpg.set_attribute("demo_mode_write_protect", "1" if readonly and demo else "0")
    tpg.set_attribute("authentication", "1" if chap else "0")
    for acl in list(tpg.node_acls):
        if acl.node_wwn not in initiators:
            acl.delete()
            changes.append("initiator %s removed" % acl.node_wwn)
    acls = dict((acl.node_wwn, acl) for acl in tpg.node_acls)
    for initiator in initiators:
        acl = acls.get(initiator)
        if acl is None:
            acl = rts.NodeACL(tpg, initiator, mode="create")
            changes.append("initiator %s added" % initiator)
        mapped = dict((m.mapped_lun, m) for m in acl.mapped_luns)
        for number, lun in have.items():
            m = mapped.get(number)
            if m is not None and m.write_protect != bool(want_luns[number].get("readonly")):
                m.delete()
                m = None
            if m is None:
                rts.MappedLUN(acl, number, lun, write_protect=bool(want_luns[number].get("readonly")))
        _set_chap(acl, chap, mutual)
    _set_chap(tpg, chap if demo else None, mutual if demo else None)

    want_portals = desired.get("portals") or ["0.0.0.0:3260"]
    have_portals = dict(("%s:%s" % (p.ip_address, p.port), p) for p in tpg.network_portals)
    for key, portal in have_portals.items():
        if key not in want_portals:
            portal.delete()
    for key in want_portals:
        if key not in have_portals:
            ip, port = key.rsplit(":", 1)
            rts.NetworkPortal(tpg, ip.strip("[]"), int(port), mode="create")
    for name, value in sorted((desired.get("attributes") or {}).items()):
        tpg.set_attribute(name, str(value))
    tpg.enable = True

    after = _target_dict(target)
    if before is not None and not changes and after != before:
        changes.append("target %s updated" % desired["iqn"])
    return changes


def remove_target(iqn):
    """Delete a target (ending its sessions) and the storage objects only it used."""
    rts = rtslib()
    target = _lookup(rts, iqn)
    if target is None:
        return []
    objects = [lun.storage_object for tpg in target.tpgs for lun in tpg.luns]
    target.delete()
    for so in objects:
        if not list(so.attached_luns):
            so.delete()
    return ["target %s deleted" % iqn]


def refresh_lun(iqn, lun_number=DATA_LUN):
    """LIO's fileio backstore fixes its size when created: re-create the LUN and its storage
    object with the same settings so initiators see the grown file."""
    rts = rtslib()
    current = read_target(iqn)
    if current is None:
        raise LioError("target %s does not exist" % iqn)
    want = dict(current)
    lun = [lu for lu in current["luns"] if lu["lun"] == lun_number]
    if not lun:
        raise LioError("target %s has no LUN %s" % (iqn, lun_number))
    target = _lookup(rts, iqn)
    for l_obj in list(_tpg_of(target).luns):
        if l_obj.lun == lun_number:
            so = l_obj.storage_object
            l_obj.delete()
            if not list(so.attached_luns):
                so.delete()
    return apply_target(want)
