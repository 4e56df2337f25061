#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pve_volume
short_description: Allocate, free, grow, snapshot, clone and attach Proxmox VE disk volumes
version_added: 0.1.0
description:
  - Manages one disk volume of a Proxmox VE storage, named as Proxmox names them
    (C(vm-<vmid>-disk-<n>), C(base-<vmid>-disk-<n>) for templates).
  - I(storage) is a storage ID, resolved through C(storage.cfg) under I(config_root). For a
    C(pvesan) storage the module talks to the pvesan service directly over HTTPS with the storage's
    own token (from C(priv/storage/<id>.pw)) and honours its C(ssl_verify_peer) and
    C(transport_encryption). For any other storage type it runs C(pvesm) on a real Proxmox VE node
    (allocate, free and path only).
  - Sizes only grow. A volume is never shrunk; asking for a smaller size than it has is reported
    as a warning and changes nothing.
author:
  - pvesan.storage developers (@pvesan)
attributes:
  check_mode:
    support: full
    description: Reads the service and reports what would change; nothing is created or deleted.
  diff_mode:
    support: full
    description: Shows the volume (name, size, snapshots) before and after.
extends_documentation_fragment:
  - pvesan.storage.pve_config

options:
  storage:
    description: Storage ID in C(storage.cfg).
    type: str
    required: true
  name:
    description:
      - Volume name, C(vm-<vmid>-disk-<n>) or C(base-<vmid>-disk-<n>).
      - When omitted with I(state=present), the next free C(vm-<vmid>-disk-<n>) of I(vmid) is
        allocated (not idempotent, every run allocates one more volume; give a name for
        idempotent playbooks).
    type: str
    aliases: [volname]
  vmid:
    description: Owner VM id. Required without I(name); must match the id in I(name).
    type: int
  size:
    description:
      - Size in bytes, or a number with a binary unit C(K), C(M), C(G), C(T) (for example C(10G)).
      - Required to allocate. On an existing volume a larger size grows it.
    type: raw
  state:
    description:
      - C(present) allocates the volume (or clones it from I(clone_from)) and grows it to I(size).
      - C(absent) frees it; its export goes with it.
      - C(snapshot) makes sure snapshot I(snapshot) exists; C(snapshot_absent) deletes it.
      - C(rollback) rolls the volume back to I(snapshot) (always a change).
      - C(attached) logs this node in to the volume's iSCSI target with open-iscsi (every portal
        when the storage has C(multipath 1)) and returns the block device; C(detached) logs out.
    type: str
    choices: [present, absent, snapshot, snapshot_absent, rollback, attached, detached]
    default: present
  snapshot:
    description: Snapshot name, for the snapshot states and as the source of a clone.
    type: str
  clone_from:
    description:
      - Name of a volume of the same storage to clone from, with I(state=present). Without
        I(snapshot), the source must be a template (C(base-...)) and its base snapshot is used.
    type: str
  ca_path:
    description: CA bundle that signed the service certificate (default the system CA store).
    type: path
  timeout:
    description: Seconds per service request.
    type: int
    default: 30
notes:
  - The lab of this collection has no kernel iSCSI initiator, so C(attached)/C(detached) are
    tested there against recorded C(iscsiadm) output only; the other states run against the real
    service.
seealso:
  - module: pvesan.storage.pve_storage
"""

EXAMPLES = r"""
- name: Allocate a 32 GiB disk for VM 100
  pvesan.storage.pve_volume:
    storage: pvesan
    name: vm-100-disk-0
    size: 32G

- name: Allocate the next free disk name of VM 100
  pvesan.storage.pve_volume:
    storage: pvesan
    vmid: 100
    size: 8G
  register: disk

- name: Grow it to 64 GiB
  pvesan.storage.pve_volume:
    storage: pvesan
    name: vm-100-disk-0
    size: 64G

- name: Snapshot before an upgrade
  pvesan.storage.pve_volume:
    storage: pvesan
    name: vm-100-disk-0
    snapshot: before-upgrade
    state: snapshot

- name: Roll back
  pvesan.storage.pve_volume:
    storage: pvesan
    name: vm-100-disk-0
    snapshot: before-upgrade
    state: rollback

- name: Clone a template disk for VM 101
  pvesan.storage.pve_volume:
    storage: pvesan
    name: vm-101-disk-0
    clone_from: base-9000-disk-0

- name: Attach on this node (open-iscsi) and use the device
  pvesan.storage.pve_volume:
    storage: pvesan
    name: vm-100-disk-0
    state: attached
  register: attached

- name: Free it
  pvesan.storage.pve_volume:
    storage: pvesan
    name: vm-100-disk-0
    state: absent
"""

RETURN = r"""
volid:
  description: Proxmox volume id, C(<storage>:<volname>).
  returned: always
  type: str
  sample: pvesan:vm-100-disk-0
name:
  description: Volume name.
  returned: always
  type: str
  sample: vm-100-disk-0
size:
  description: Size in bytes (after the change; in check mode, what it would be).
  returned: when the volume exists or would exist
  type: int
  sample: 34359738368
path:
  description:
    - Where the data is - C(iscsi://<portal>/<iqn>/<lun>) for QEMU's libiscsi, the block device
      after I(state=attached), or C(pvesm path) for other storage types.
  returned: when the volume exists
  type: str
  sample: iscsi://10.89.1.10:3260/iqn.2026-11.org.pvesan:lab.v-0123456789abcdef/1
snapshots:
  description: Snapshot names of the volume (pvesan storages).
  returned: when the volume exists
  type: list
  elements: str
volume:
  description: The volume as the pvesan service describes it (CHAP secrets removed).
  returned: for pvesan storages, when the volume exists
  type: dict
"""

import json
import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url
from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_cfg import StorageCfgError, StorageCfgFile
from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_schema import TYPES
from ansible_collections.pvesan.storage.plugins.module_utils._pvesan_client import ApiError, PvesanClient, parse_size

NAME_RE = re.compile(r'^(vm|base)-(\d+)-disk-(\d+)$')
TLS_ENDPOINTS = '/etc/pvesan/tls-endpoints.json'


def fail(module, msg, **kw):
    module.fail_json(msg=msg, **kw)


def as_bool(value, default):
    if value is None:
        return default
    return str(value).lower() in ('1', 'true', 'yes', 'on')


def logged_in(sessions, portals, iqn):
    """The portals of ``portals`` that ``iscsiadm -m session`` lists a session to ``iqn`` on.

    open-iscsi prints one line per session, e.g. ``tcp: [1] 10.0.2.2:13291,1 <iqn> (non-flash)``
    (recorded from open-iscsi 2.1.8 in the kernel VM: tests/unit/plugins/modules/fixtures/iscsi).
    """
    return [pt for pt in portals if re.search(r'\s%s,\d+\s+%s(\s|$)' % (re.escape(pt), re.escape(iqn)), sessions, re.M)]


def ansible_transport(validate_certs, ca_path):
    """The client's transport on ansible.module_utils.urls (proxies, CA bundles as modules use them)."""
    def send(method, url, headers, body, timeout):
        try:
            resp = open_url(url, method=method, data=body, headers=headers, validate_certs=validate_certs,
                            ca_path=ca_path, timeout=timeout, follow_redirects='none')
            return resp.getcode(), resp.read(), None
        except HTTPError as e:
            return e.code, e.read(), e.headers.get('Location')
        except (URLError, OSError, ValueError) as e:
            raise ApiError('cannot reach the pvesan service at %s: %s' % (url.split('/api/')[0], getattr(e, 'reason', e)))
    return send


def public(vol):
    """The service's volume description without CHAP secrets."""
    vol = dict(vol)
    export = dict(vol.get('export') or {})
    if export.get('chap'):
        export['chap'] = {'user': export['chap'].get('user')}
    vol['export'] = export
    return vol


class Volume:
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.storage = self.p['storage']
        self.diff = {'before': {}, 'after': {}}

    # -- storage resolution ----------------------------------------------------------------
    def resolve(self):
        cfgfile = StorageCfgFile(self.p['config_root'])
        try:
            cfg = cfgfile.read()
        except (StorageCfgError, IOError, OSError) as e:
            fail(self.module, 'cannot read %s: %s' % (cfgfile.path, e))
        section = cfg.sections.get(self.storage)
        if section is None:
            fail(self.module, "unknown storage '%s': %s has no such storage (known: %s)"
                 % (self.storage, cfgfile.path, ', '.join(sorted(cfg.sections)) or 'none'))
        self.section = section
        self.props = section.props
        if section.type != 'pvesan':
            return None
        secret = TYPES['pvesan'].secrets['auth_token']  # where pve_storage keeps it
        token_file = os.path.join(self.p['config_root'], secret.path.format(id=self.storage))
        try:
            with open(token_file) as f:
                token = f.read().strip()
        except (IOError, OSError) as e:
            fail(self.module, "pvesan storage '%s' has no token: cannot read %s (%s); set auth_token with "
                              "pvesan.storage.pve_storage" % (self.storage, token_file, e.strerror))
        self.module.no_log_values.add(token)
        try:
            return PvesanClient(self.props['api_url'], token, timeout=self.p['timeout'],
                                transport=ansible_transport(as_bool(self.props.get('ssl_verify_peer'), True), self.p['ca_path']))
        except ApiError as e:
            fail(self.module, "storage '%s': %s" % (self.storage, e))

    # -- names -----------------------------------------------------------------------------
    def check_name(self, name):
        m = NAME_RE.match(name)
        if not m:
            fail(self.module, "volume name '%s' is not in Proxmox's naming: use vm-<vmid>-disk-<n> "
                              "(or base-<vmid>-disk-<n> for a template), e.g. vm-100-disk-0" % name)
        if self.p['vmid'] is not None and int(m.group(2)) != self.p['vmid']:
            fail(self.module, "volume name '%s' belongs to VM %s, not to vmid %d" % (name, m.group(2), self.p['vmid']))
        return name

    def next_free_name(self, api):
        vmid = self.p['vmid']
        taken = set()
        for prefix in ('vm-%d-disk-' % vmid, 'base-%d-disk-' % vmid):
            for vol in api.volumes(prefix):
                m = NAME_RE.match(vol['name'])
                if m and int(m.group(2)) == vmid:
                    taken.add(int(m.group(3)))
        n = 0
        while n in taken:
            n += 1
        return 'vm-%d-disk-%d' % (vmid, n)

    # -- results ---------------------------------------------------------------------------
    def portals(self, vol):
        portals = list((vol.get('export') or {}).get('portals') or [])
        if self.props.get('transport_encryption') == 'tls':
            try:
                with open(TLS_ENDPOINTS) as f:
                    data = json.load(f)
            except (IOError, OSError, ValueError) as e:
                fail(self.module, "storage '%s' uses transport_encryption tls but %s cannot be read (%s): run the "
                                  "pvesan.storage.transport_encryption role" % (self.storage, TLS_ENDPOINTS, e))
            endpoints = data.get('endpoints', data)
            portals = [endpoints.get(p, p) for p in portals]
        return portals

    def url(self, vol):
        export = vol.get('export') or {}
        portals = self.portals(vol)
        if not portals or not export.get('iqn'):
            return None
        return 'iscsi://%s/%s/%s' % (portals[0], export['iqn'], export.get('lun', 1))

    def summary(self, vol, snaps):
        if not vol:
            return {}
        return {'name': vol['name'], 'size': vol['size'], 'snapshots': sorted(snaps)}

    def exit(self, changed, vol, snaps=None, path=None, **extra):
        p = self.module.params
        name = vol['name'] if vol else self.name
        result = dict(changed=changed, name=name, volid='%s:%s' % (self.storage, name), **extra)
        if vol:
            result.update(size=vol['size'], path=path or self.url(vol), snapshots=sorted(snaps or []), volume=public(vol))
        if self.module._diff:
            result['diff'] = self.diff
        if p['state'] == 'present' and p['size'] is not None and vol and vol['size'] > self.size:
            self.module.warn('%s is %d bytes, larger than the requested %d: volumes are never shrunk'
                             % (name, vol['size'], self.size))
        self.module.exit_json(**result)

    # -- main ------------------------------------------------------------------------------
    def run(self):
        p = self.p
        self.size = None
        if p['size'] is not None:
            try:
                self.size = parse_size(int(p['size']) if str(p['size']).isdigit() else p['size'])
            except ValueError as e:
                fail(self.module, "size %r is not a size: %s" % (p['size'], e))
        if p['name']:
            self.name = self.check_name(p['name'])
        elif p['state'] == 'present' and p['vmid'] is not None:
            self.name = None
        else:
            fail(self.module, 'name is required (vmid alone is enough only to allocate with state=present)')
        if p['state'] in ('snapshot', 'snapshot_absent', 'rollback') and not p['snapshot']:
            fail(self.module, 'state=%s needs snapshot' % p['state'])

        api = self.resolve()
        if api is None:
            return self.run_pvesm()
        try:
            self.run_pvesan(api)
        except ApiError as e:
            if e.status == 0:
                fail(self.module, "storage '%s' is down: %s" % (self.storage, e))
            fail(self.module, "storage '%s': %s" % (self.storage, e), status=e.status)

    def snap_names(self, api, vol):
        return [s['name'] for s in api.snapshots(vol['name'])] if vol else []

    def run_pvesan(self, api):
        p, check = self.p, self.module.check_mode
        if self.name is None:
            if self.size is None:
                fail(self.module, 'size is required to allocate a volume')
            self.name = self.next_free_name(api)
        vol = api.find_volume(self.name)
        snaps = self.snap_names(api, vol)
        self.diff['before'] = self.summary(vol, snaps)
        state = p['state']

        if state == 'absent':
            if vol and not check:
                api.delete_volume(self.name)
            return self.exit(bool(vol), None)
        if not vol and state != 'present':
            fail(self.module, "volume '%s' does not exist on storage '%s'" % (self.name, self.storage))

        changed = False
        if state == 'present':
            if not vol:
                changed = True
                if p['clone_from']:
                    src = api.find_volume(p['clone_from'])
                    if not src:
                        fail(self.module, "clone_from volume '%s' does not exist on storage '%s'" % (p['clone_from'], self.storage))
                    if not p['snapshot'] and not p['clone_from'].startswith('base-'):
                        fail(self.module, "clone_from '%s' is not a template (base-...): give the snapshot to clone from" % p['clone_from'])
                    vol = dict(src, name=self.name) if check else api.clone_volume(p['clone_from'], self.name, p['snapshot'])
                else:
                    if self.size is None:
                        fail(self.module, 'size is required to allocate a volume')
                    placement = dict(service_type=self.props.get('service_type'),
                                     include=self.props.get('query_include'), exclude=self.props.get('query_exclude'))
                    for key in ('include', 'exclude'):
                        if isinstance(placement[key], str):
                            placement[key] = [t for t in placement[key].split(',') if t]
                    vol = {'name': self.name, 'size': self.size, 'export': {}} if check else \
                        api.create_volume(self.name, self.size, **placement)
            if self.size is not None and vol['size'] < self.size:
                changed = True
                vol = dict(vol, size=self.size) if check else api.resize_volume(self.name, self.size)
        elif state == 'snapshot':
            if p['snapshot'] not in snaps:
                changed = True
                if not check:
                    api.create_snapshot(self.name, p['snapshot'])
                snaps = snaps + [p['snapshot']]
        elif state == 'snapshot_absent':
            if p['snapshot'] in snaps:
                changed = True
                if not check:
                    api.delete_snapshot(self.name, p['snapshot'])
                snaps = [s for s in snaps if s != p['snapshot']]
        elif state == 'rollback':
            if p['snapshot'] not in snaps:
                fail(self.module, "volume '%s' has no snapshot '%s' (it has: %s)" % (self.name, p['snapshot'], ', '.join(snaps) or 'none'))
            changed = True
            if not check:
                vol = api.rollback_snapshot(self.name, p['snapshot'])
        elif state in ('attached', 'detached'):
            return self.run_iscsi(vol, snaps)
        self.diff['after'] = self.summary(vol, snaps)
        return self.exit(changed, vol, snaps)

    # -- attach on this node (open-iscsi) ----------------------------------------------------
    def run_iscsi(self, vol, snaps):
        iscsiadm = self.module.get_bin_path('iscsiadm', required=True)
        export = vol.get('export') or {}
        iqn, lun = export.get('iqn'), export.get('lun', 1)
        portals = self.portals(vol)
        if not as_bool(self.props.get('multipath'), False):
            portals = portals[:1]
        rc, out, err = self.module.run_command([iscsiadm, '-m', 'session'])
        sessions = out if rc == 0 else ''   # rc 21: no active sessions
        current = logged_in(sessions, portals, iqn)
        want = self.p['state'] == 'attached'
        todo = [pt for pt in portals if (pt not in current) == want]
        if not self.module.check_mode:
            for pt in todo:
                node = [iscsiadm, '-m', 'node', '-T', iqn, '-p', pt]
                if want:
                    self.module.run_command(node + ['-o', 'new'], check_rc=True)
                    self.module.run_command(node + ['--login'], check_rc=True)
                else:
                    self.module.run_command(node + ['--logout'], check_rc=True)
                    self.module.run_command(node + ['-o', 'delete'])
        devices = ['/dev/disk/by-path/ip-%s-iscsi-%s-lun-%s' % (pt, iqn, lun) for pt in portals]
        path = devices[0] if want else None
        self.diff['before'] = {'sessions': current}
        self.diff['after'] = {'sessions': portals if want else []}
        return self.exit(bool(todo), vol, snaps, path=path, devices=devices if want else [])

    # -- other storage types: pvesm on a real Proxmox VE node ---------------------------------
    def run_pvesm(self):
        p = self.p
        pvesm = self.module.get_bin_path('pvesm')
        if not pvesm:
            fail(self.module, "storage '%s' is of type %s: managing its volumes needs pvesm (a Proxmox VE node); "
                              "only pvesan storages work without it" % (self.storage, self.section.type))
        if p['state'] not in ('present', 'absent'):
            fail(self.module, "state=%s is supported for pvesan storages only; use qm/pct for %s storages"
                 % (p['state'], self.section.type))
        if self.name is None:
            fail(self.module, 'name is required for %s storages' % self.section.type)
        volid = '%s:%s' % (self.storage, self.name)
        rc, out, err = self.module.run_command([pvesm, 'path', volid])
        exists = rc == 0
        if p['state'] == 'absent':
            if exists and not self.module.check_mode:
                self.module.run_command([pvesm, 'free', volid], check_rc=True)
            self.module.exit_json(changed=exists, volid=volid, name=self.name)
        if not exists:
            if self.size is None:
                fail(self.module, 'size is required to allocate a volume')
            vmid = NAME_RE.match(self.name).group(2)
            if not self.module.check_mode:
                # pvesm alloc takes KiB without a unit
                self.module.run_command([pvesm, 'alloc', self.storage, vmid, self.name, str(max(1, self.size // 1024))],
                                        check_rc=True)
                rc, out, err = self.module.run_command([pvesm, 'path', volid], check_rc=True)
        self.module.exit_json(changed=not exists, volid=volid, name=self.name, path=out.strip() or None,
                              size=self.size)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            storage=dict(type='str', required=True),
            name=dict(type='str', aliases=['volname']),
            vmid=dict(type='int'),
            size=dict(type='raw'),
            state=dict(type='str', default='present',
                       choices=['present', 'absent', 'snapshot', 'snapshot_absent', 'rollback', 'attached', 'detached']),
            snapshot=dict(type='str'),
            clone_from=dict(type='str'),
            config_root=dict(type='path', default='/etc/pve'),
            ca_path=dict(type='path'),
            timeout=dict(type='int', default=30),
        ),
        supports_check_mode=True,
    )
    # the C locale for every command: their output is parsed, translated messages would not match
    module.run_command_environ_update = dict(LANG='C', LC_ALL='C', LC_MESSAGES='C')
    Volume(module).run()


if __name__ == '__main__':
    main()
