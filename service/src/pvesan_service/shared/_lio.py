# -*- coding: utf-8 -*-
# Copyright (c) 2026, pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Drive the Linux kernel iSCSI target (LIO) through rtslib-fb (``python3-rtslib-fb``).

Shared by the ``iscsi_target`` module and the bundled volume service (a byte-identical copy in its
``shared`` package).
rtslib-fb is imported lazily: this file loads without it, and every call that needs it raises
``LioError`` saying what to install.  Python 3.8+, standard library plus rtslib-fb.

Same declarative dicts as ``tgtadm.py``::

    {"iqn": "...", "tid": None,             # LIO has no tid; the TPG is always 1
     "luns": [{"lun": 1, "path": "/srv/v.img", "serial": "v0a1b", "vendor": None, "product": None,
               "readonly": False, "write_cache": True, "size": 67108864,
               "thin_provisioning": True}],     # UNMAP and WRITE SAME(unmap) (emulate_tpu, emulate_tpws)
     "initiators": ["iqn.1993-08.org.debian:01:abc"],   # [] = any initiator (demo mode), unless any_initiator is False
     "any_initiator": False,                             # desired only: demo mode (any initiator, TPG-wide CHAP)
     "allow_all": False,                                 # read only: the TPG is in demo mode
     "chap": {"user": "u", "password": "p"} | None,
     "mutual_chap": {"user": "m", "password": "q"} | None,
     "portals": ["0.0.0.0:3260"],
     "attributes": {"login_timeout": "15"}}              # TPG attributes

- ``read_targets()`` -> ``{iqn: dict}`` of every iSCSI target; ``read_target(iqn)`` -> dict or None.
- ``plan_target(desired, current)`` -> the steps that make a target match (check mode reports
  their changes), ``apply_steps(steps)`` makes them; ``apply_target(desired)`` does both.
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
           "portals": [], "attributes": {}, "allow_all": False, "acl_chap": {}}
    if tpg is None:
        return out
    for lun in sorted(tpg.luns, key=lambda x: x.lun):
        so = lun.storage_object
        out["luns"].append({"lun": lun.lun, "path": so.udev_path, "serial": so.wwn, "vendor": None, "product": None,
                            "readonly": _readonly(tpg, so), "write_cache": getattr(so, "write_back", None),
                            "size": getattr(so, "size", None), "backstore": so.plugin, "name": so.name,
                            "thin_provisioning": _thin(so)})
    acls = list(tpg.node_acls)
    out["initiators"] = sorted(acl.node_wwn for acl in acls)
    auth = acls[0] if acls else tpg  # demo mode: TPG-wide credentials
    out["chap"] = _chap(auth.chap_userid, auth.chap_password)
    out["mutual_chap"] = _chap(auth.chap_mutual_userid, auth.chap_mutual_password)
    # each ACL's own credentials (plan_target compares them)
    out["acl_chap"] = dict((acl.node_wwn, (_chap(acl.chap_userid, acl.chap_password),
                                           _chap(acl.chap_mutual_userid, acl.chap_mutual_password))) for acl in acls)
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


# What a thin LUN needs from LIO: UNMAP (emulate_tpu) and WRITE SAME with UNMAP (emulate_tpws),
# which the fileio backstore makes by punching holes in the file and the block backstore by
# discarding; holes and discarded blocks read as zeros (unmap_zeroes_data: LBPRZ).
THIN_ATTRIBUTES = ("emulate_tpu", "emulate_tpws", "unmap_zeroes_data")


def _thin(so):
    try:
        return so.get_attribute("emulate_tpu") == "1"
    except Exception:  # pylint: disable=broad-except
        # an old kernel without the attribute
        return False


def _set_thin(so, thin):
    for name in THIN_ATTRIBUTES:
        try:
            so.set_attribute(name, "1" if thin else "0")
        except Exception as exc:  # pylint: disable=broad-except
            if thin:
                raise LioError("storage object %s: cannot set %s (does the kernel and the backing store support "
                               "UNMAP?): %s" % (so.name, name, exc))


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
        so = rts.BlockStorageObject(name, dev=path, readonly=bool(lun.get("readonly")), wwn=lun.get("serial"))
    else:
        # rtslib wants the size of a file backstore (LIO fixes it at creation: refresh_lun re-creates)
        so = rts.FileIOStorageObject(name, dev=path, size=os.path.getsize(path), write_back=lun.get("write_cache") is not False,
                                     wwn=lun.get("serial"))
    if lun.get("thin_provisioning"):
        _set_thin(so, True)
    return so


class Step(object):
    """One step of a plan: the change it makes (``change``; None for settings re-applied every
    time, which are not a change to report) and the function that makes it, given rtslib (None
    for a change that the settings steps of the plan make)."""

    def __init__(self, change, action):
        self.change = change
        self.action = action


def _tpg(rts, iqn):
    return _tpg_of(_lookup(rts, iqn))


def _lun_obj(tpg, number):
    return next(lun for lun in tpg.luns if lun.lun == number)


def _acl_obj(tpg, initiator):
    return next(acl for acl in tpg.node_acls if acl.node_wwn == initiator)


def _set_chap(obj, chap, mutual):
    obj.chap_userid = chap["user"] if chap else ""
    obj.chap_password = chap["password"] if chap else ""
    obj.chap_mutual_userid = mutual["user"] if mutual else ""
    obj.chap_mutual_password = mutual["password"] if mutual else ""


def _map_luns(rts, acl, tpg, want_luns):
    """Map every LUN of the TPG into the ACL with the wanted write protection."""
    mapped = dict((m.mapped_lun, m) for m in acl.mapped_luns)
    for lun in tpg.luns:
        readonly = bool(want_luns[lun.lun].get("readonly"))
        m = mapped.get(lun.lun)
        if m is not None and m.write_protect != readonly:
            m.delete()
            m = None
        if m is None:
            rts.MappedLUN(acl, lun.lun, lun, write_protect=readonly)


def _mode(desired):
    """Demo mode (any initiator, TPG-wide CHAP) or ACL mode, and the initiators of the ACLs."""
    initiators = desired.get("initiators") or []
    demo = desired["any_initiator"] if "any_initiator" in desired else not initiators
    return demo, ([] if demo else list(initiators))


def plan_target(desired, current=None):
    """The steps that make one target match ``desired``, from its state ``current`` as
    ``read_target`` gives it (None: it does not exist).  Check mode reports the steps' changes;
    ``apply_steps`` makes them.  A plan without changes (only settings re-applied) leaves the
    target as it is."""
    iqn = desired["iqn"]
    for initiator in desired.get("initiators") or []:
        if not initiator.startswith(("iqn.", "eui.", "naa.")):
            raise LioError("LIO ACLs take initiator names (iqn./eui./naa.), not addresses: %r" % initiator)
    steps = []
    if current is None:
        def create(rts):
            target = rts.Target(_fabric(rts), iqn, mode="create")
            rts.TPG(target, TPG_TAG, mode="create")
        steps.append(Step("target %s created" % iqn, create))
        current = {"luns": [], "initiators": [], "chap": None, "mutual_chap": None, "portals": [], "attributes": {},
                   "acl_chap": {}, "acl_readonly": {}}

    want_luns = dict((lu["lun"], lu) for lu in desired.get("luns") or [])
    have_luns = dict((lu["lun"], lu) for lu in current["luns"])
    for number, have in sorted(have_luns.items()):
        want = want_luns.get(number)
        if want is None or have["path"] != want["path"] or have["serial"] != want.get("serial"):
            def remove(rts, number=number):
                lun = _lun_obj(_tpg(rts, iqn), number)
                so = lun.storage_object
                lun.delete()
                if not list(so.attached_luns):
                    so.delete()
            steps.append(Step("lun %s removed" % number, remove))
            del have_luns[number]
    for number, want in sorted(want_luns.items()):
        if number in have_luns and bool(have_luns[number]["readonly"]) != bool(want.get("readonly")):
            steps.append(Step("lun %s readonly=%s" % (number, bool(want.get("readonly"))), None))  # made by the mappings
        if number in have_luns and "thin_provisioning" in want \
                and bool(have_luns[number].get("thin_provisioning")) != bool(want["thin_provisioning"]):
            def thin(rts, number=number, on=bool(want["thin_provisioning"])):
                _set_thin(_lun_obj(_tpg(rts, iqn), number).storage_object, on)
            steps.append(Step("lun %s thin provisioning %s" % (number, "on" if want["thin_provisioning"] else "off"), thin))
        if number not in have_luns:
            def create_lun(rts, number=number, want=want):
                rts.LUN(_tpg(rts, iqn), lun=number, storage_object=_storage_object(rts, want))
            steps.append(Step("lun %s created" % number, create_lun))

    demo, initiators = _mode(desired)
    chap, mutual = desired.get("chap"), desired.get("mutual_chap")
    readonly = any(lu.get("readonly") for lu in want_luns.values())

    def mode(rts):
        tpg = _tpg(rts, iqn)
        tpg.set_attribute("generate_node_acls", "1" if demo else "0")
        tpg.set_attribute("cache_dynamic_acls", "1" if demo else "0")
        # without it LIO lists the target in SendTargets to every initiator, ACL or not
        tpg.set_attribute("demo_mode_discovery", "1" if demo else "0")
        tpg.set_attribute("demo_mode_write_protect", "1" if readonly and demo else "0")
        tpg.set_attribute("authentication", "1" if chap else "0")
    steps.append(Step(None, mode))

    for initiator in current["initiators"]:
        if initiator not in initiators:
            steps.append(Step("initiator %s removed" % initiator,
                              lambda rts, initiator=initiator: _acl_obj(_tpg(rts, iqn), initiator).delete()))
    for initiator in initiators:
        def acl(rts, initiator=initiator):
            tpg = _tpg(rts, iqn)
            found = [a for a in tpg.node_acls if a.node_wwn == initiator]
            node = found[0] if found else rts.NodeACL(tpg, initiator, mode="create")
            _map_luns(rts, node, tpg, want_luns)
            _set_chap(node, chap, mutual)
        if initiator not in current["initiators"]:
            steps.append(Step("initiator %s added" % initiator, acl))
        else:
            steps.append(Step(None, acl))
            if current["acl_chap"].get(initiator) != (chap, mutual):
                steps.append(Step("chap of %s %s" % (initiator, "set for %s" % chap["user"] if chap else "removed"), None))
    tpg_chap = (chap, mutual) if demo else (None, None)
    if demo and (current.get("chap"), current.get("mutual_chap")) != tpg_chap:
        steps.append(Step("chap %s" % ("set for %s" % chap["user"] if chap else "removed"), None))
    steps.append(Step(None, lambda rts: _set_chap(_tpg(rts, iqn), *tpg_chap)))

    want_portals = desired.get("portals") or ["0.0.0.0:3260"]
    for key in current["portals"]:
        if key not in want_portals:
            def drop(rts, key=key):
                for portal in _tpg(rts, iqn).network_portals:
                    if "%s:%s" % (portal.ip_address, portal.port) == key:
                        portal.delete()
            steps.append(Step("portal %s removed" % key, drop))
    for key in want_portals:
        if key not in current["portals"]:
            def add(rts, key=key):
                ip, port = key.rsplit(":", 1)
                rts.NetworkPortal(_tpg(rts, iqn), ip.strip("[]"), int(port), mode="create")
            steps.append(Step("portal %s added" % key, add))
    for name, value in sorted((desired.get("attributes") or {}).items()):
        if current["attributes"].get(name) != str(value):
            steps.append(Step("attribute %s=%s" % (name, value),
                              lambda rts, name=name, value=value: _tpg(rts, iqn).set_attribute(name, str(value))))

    def enable(rts):
        _tpg(rts, iqn).enable = True
    steps.append(Step(None, enable))
    return steps


def apply_steps(steps, iqn=None):
    """Make the steps of a plan; returns their changes.  ``iqn``: the target the plan creates,
    removed again when a later step fails (nothing half-made is left)."""
    rts = rtslib()
    try:
        for step in steps:
            if step.action is not None:
                step.action(rts)
    except Exception:
        if iqn is not None:
            remove_target(iqn)
        raise
    return [step.change for step in steps if step.change]


def apply_target(desired):
    """Create or update one target to match ``desired``; returns the list of changes."""
    current = read_target(desired["iqn"])
    steps = plan_target(desired, current)
    return apply_steps(steps, desired["iqn"] if current is None else None)


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


def refresh_lun(iqn, lun_number=DATA_LUN, write_cache=None):
    """LIO's fileio backstore fixes its size when created: re-create the LUN and its storage
    object with the same settings so initiators see the grown file.  ``write_cache`` (True/False)
    sets the write-back mode of the new fileio object (None: the one it had)."""
    rts = rtslib()
    current = read_target(iqn)
    if current is None:
        raise LioError("target %s does not exist" % iqn)
    want = dict(current, any_initiator=current["allow_all"])
    lun = [lu for lu in current["luns"] if lu["lun"] == lun_number]
    if not lun:
        raise LioError("target %s has no LUN %s" % (iqn, lun_number))
    if write_cache is not None:
        want["luns"] = [dict(lu, write_cache=bool(write_cache)) if lu["lun"] == lun_number else lu
                        for lu in current["luns"]]
    target = _lookup(rts, iqn)
    for l_obj in list(_tpg_of(target).luns):
        if l_obj.lun == lun_number:
            so = l_obj.storage_object
            l_obj.delete()
            if not list(so.attached_luns):
                so.delete()
    return apply_target(want)
