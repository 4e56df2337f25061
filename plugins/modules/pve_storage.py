#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pve_storage
short_description: Manage one storage definition in Proxmox VE's /etc/pve/storage.cfg
version_added: 0.1.0
description:
  - Adds, updates or removes one storage (one section) in C(storage.cfg), the file that
    Proxmox VE shares between all nodes of a cluster, for every storage type of Proxmox VE 9.1
    (C(dir), C(nfs), C(cifs), C(pbs), C(zfspool), C(lvm), C(lvmthin), C(iscsi), C(iscsidirect),
    C(rbd), C(cephfs), C(btrfs), C(zfs) = ZFS over iSCSI, C(esxi)) and for C(pvesan), the storage type
    of this collection's Proxmox plugin. Proxmox VE 9 removed C(glusterfs) and C(maxfiles); they are
    refused with the reason.
  - Everything is validated before the file is touched, with Proxmox's own rules, held by the
    collection's tests to what pve-storage 9.1.7 and pve-common 9.2.1 themselves report and do -
    property names and types per storage type, content types, the storage ID, required properties.
    A property Proxmox fixes at creation (for example C(vgname), C(pool), C(path), C(server),
    C(export), C(portal), C(target), C(snapshot-as-volume-chain) of dir/nfs/cifs, C(api_url) of
    pvesan) cannot be changed.
  - What Proxmox fills in when it reads the file is written on creation, so that its next write
    changes nothing - the type's default C(content), C(shared 1) of a C(pvesan) storage (always
    shared). A section the module rewrites loses properties Proxmox does not know, as it does when
    Proxmox writes it.
  - Edits take the cluster lock Proxmox itself takes (C(priv/lock/file-storage_cfg), created with
    mkdir; 10 s to acquire, stale after 120 s, work aborted after 60 s) plus a node-local lock,
    re-read the file under the lock, and replace it atomically (temp file + rename). Other sections
    keep their exact bytes; the changed section is written in Proxmox's canonical form.
  - Secrets are never written to C(storage.cfg); they go where Proxmox keeps them (mode 0600),
    C(priv/storage/<id>.pw) (cifs, pbs, esxi passwords, pvesan C(auth_token)),
    C(priv/storage/<id>.enc) (pbs encryption key), C(priv/storage/<id>.master.pem) (pbs master public
    key), C(priv/ceph/<id>.keyring) (rbd), C(priv/ceph/<id>.secret) (cephfs). Removing a storage removes
    its secret files. A secret given inside I(options) is refused, and masked in every output.
  - A symlinked C(storage.cfg) stays a symlink; the file it points to is replaced.
  - This module edits files only; it does not mount, log in or activate anything, and it works on
    nodes without C(pvesm) (use I(config_root) to point it at any directory).
author:
  - pvesan.storage developers (@pvesan)
attributes:
  check_mode:
    support: full
    description: Reads the files without taking the lock and reports what would change.
  diff_mode:
    support: full
    description: Shows the section text before and after; secret files are listed, never shown.
extends_documentation_fragment:
  - pvesan.storage.pve_config

options:
  name:
    description:
      - The storage ID. Proxmox requires at least 2 characters, a letter first, a letter or digit
        last, and only letters, digits, C(-), C(_) and C(.).
    type: str
    required: true
    aliases: [id, storage]
  type:
    description:
      - The storage type. Required to create a storage; when the storage exists it must match.
    type: str
    choices: [dir, nfs, cifs, pbs, zfspool, lvm, lvmthin, iscsi, iscsidirect, rbd, cephfs, btrfs, zfs, esxi, pvesan]
  state:
    description:
      - C(present) creates or updates the storage, C(absent) removes it and its secret files.
    type: str
    choices: [present, absent]
    default: present
  content:
    description:
      - Content types the storage may hold, for example C(images), C(rootdir), C(iso), C(vztmpl),
        C(backup), C(snippets), C(import). Checked against what the storage type supports; an empty
        list means C(none) where the type allows it. Not given on creation, the type's default
        (what Proxmox fills in) is written.
    type: list
    elements: str
  nodes:
    description:
      - Restrict the storage to these cluster nodes. An empty list removes the restriction.
    type: list
    elements: str
  disable:
    description:
      - Disable the storage (written as a bare C(disable) line; C(false) removes it).
    type: bool
  shared:
    description:
      - Mark the storage as shared. Only C(dir), C(lvm), C(btrfs) and C(esxi) accept it; the network
        types and C(pvesan) are always shared (Proxmox overrides C(shared 0) for them), so C(false)
        is refused there and a C(pvesan) storage gets C(shared 1).
    type: bool
  options:
    description:
      - The type-specific properties, with Proxmox's names as keys (for example C(path), C(vgname),
        C(thinpool), C(pool), C(sparse), C(server), C(export), C(prune-backups), C(api_url),
        C(transport_encryption)). Values are checked per type; booleans may be given as YAML booleans.
      - A key with a null value removes that property (optional, non-fixed properties only).
      - Secrets and keys are not accepted here (and are masked in the output); use I(password),
        I(keyring), I(encryption_key), I(master_pubkey) or I(auth_token).
      - See C(docs/storage_cfg.md) in the collection for the properties of every type.
    type: dict
    default: {}
  password:
    description:
      - Password of a C(cifs), C(pbs) or C(esxi) storage, stored in C(priv/storage/<id>.pw).
    type: str
  keyring:
    description:
      - Ceph keyring (C(rbd), stored in C(priv/ceph/<id>.keyring)) or CephFS secret (C(cephfs),
        stored in C(priv/ceph/<id>.secret)).
    type: str
  encryption_key:
    description:
      - C(pbs) client encryption key, the JSON written by C(proxmox-backup-client key create --kdf none).
        Stored in C(priv/storage/<id>.enc); C(storage.cfg) gets its fingerprint, as Proxmox does.
    type: str
  master_pubkey:
    description:
      - C(pbs) master public key (RSA, PEM), as PEM text or base64 of it (what C(pvesm) takes). Stored
        decoded in C(priv/storage/<id>.master.pem) and C(storage.cfg) gets C(master-pubkey 1), as
        Proxmox's PBS plugin does; backups then carry a copy of the encryption key encrypted with it.
      - Needs an encryption key (I(encryption_key), or one the storage already has).
    type: str
  auth_token:
    description:
      - API token of a C(pvesan) storage, stored in C(priv/storage/<id>.pw).
    type: str
  purge:
    description:
      - Remove properties of the existing storage that are not declared here (required and fixed
        properties are kept), and secret files for secrets that are not given.
    type: bool
    default: false
  lock_timeout:
    description:
      - Seconds to wait for the storage.cfg locks (Proxmox waits 10).
    type: int
    default: 10
notes:
  - On a real Proxmox VE node (C(pvesm) present) the module warns when a C(pvesan) storage is declared but
    C(PVE/Storage/Custom/PVESANPlugin.pm) is not installed, because Proxmox drops sections of unknown
    types whenever it rewrites C(storage.cfg).
  - Proxmox writes C(content) and C(nodes) in hash order; this module writes them sorted and compares
    them as sets, so a reordered list is not a change.
  - Comments inside the changed section are dropped, as Proxmox drops all comments when it writes
    the file. Comments elsewhere are kept.
seealso:
  - module: pvesan.storage.pve_storage_info
  - name: Proxmox VE storage configuration
    description: Chapter 7 of the Proxmox VE administration guide.
    link: https://pve.proxmox.com/pve-docs/chapter-pvesm.html
"""

EXAMPLES = r"""
- name: NFS share for ISO images and templates
  pvesan.storage.pve_storage:
    name: iso-templates
    type: nfs
    content: [iso, vztmpl]
    options:
      server: 10.0.0.10
      export: /space/iso-templates
      options: vers=3,soft

- name: LVM-thin pool for VM and container disks
  pvesan.storage.pve_storage:
    name: local-lvm
    type: lvmthin
    content: [images, rootdir]
    options:
      vgname: pve
      thinpool: data

- name: Local ZFS pool, sparse zvols
  pvesan.storage.pve_storage:
    name: local-zfs
    type: zfspool
    content: [images, rootdir]
    options:
      pool: rpool/data
      sparse: true

- name: ZFS over iSCSI with a Linux LIO target
  pvesan.storage.pve_storage:
    name: zfs-lio
    type: zfs
    content: [images]
    options:
      portal: 192.0.2.111
      target: iqn.2003-01.org.linux-iscsi.lio.x8664:sn.xxxxxxxxxxxx
      pool: tank
      blocksize: 4k
      iscsiprovider: LIO
      lio_tpg: tpg1
      sparse: true

- name: pvesan volume service over TLS with multipath
  pvesan.storage.pve_storage:
    name: san1
    type: pvesan
    content: [images, rootdir]
    auth_token: "{{ vault_pvesan_token }}"
    options:
      api_url: https://10.89.1.10:8443/api
      ssl_verify_peer: true
      transport_encryption: tls
      multipath: true

- name: CIFS backup share, password kept in /etc/pve/priv/storage/backup.pw
  pvesan.storage.pve_storage:
    name: backup
    type: cifs
    content: [backup]
    password: "{{ vault_cifs_password }}"
    options:
      server: 10.0.0.11
      share: VMData
      username: anna
      smbversion: "3"

- name: Exactly these properties, nothing else
  pvesan.storage.pve_storage:
    name: local-lvm
    type: lvmthin
    content: [images]
    options: {vgname: pve, thinpool: data}
    purge: true

- name: Remove a storage and its secret files
  pvesan.storage.pve_storage:
    name: backup
    state: absent
"""

RETURN = r"""
name:
  description: The storage ID.
  returned: always
  type: str
  sample: local-lvm
storage:
  description: The storage's properties after the run (type included), as parsed; empty when absent.
  returned: always
  type: dict
  sample: {"type": "lvmthin", "vgname": "pve", "thinpool": "data", "content": ["images", "rootdir"]}
section:
  description: The section's text in storage.cfg after the run; empty when absent.
  returned: always
  type: str
  sample: "lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent images,rootdir\n"
created:
  description: Whether the storage was added.
  returned: always
  type: bool
restart_needed:
  description:
    - Whether pvedaemon and pveproxy should be restarted, which is the case when a storage of a
      custom plugin type (C(pvesan)) was added (driver guide).
  returned: always
  type: bool
secrets_changed:
  description: Secret files written or removed (paths only).
  returned: always
  type: list
  elements: str
  sample: ["/etc/pve/priv/storage/san1.pw"]
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pvesan.storage.plugins.module_utils._files import read_text
from ansible_collections.pvesan.storage.plugins.module_utils._pve_cluster_lock import LockError, StorageCfgLock
from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_cfg import (
    StorageCfgError, StorageCfgFile, desired_props, dropped_keys, plan_present, secret_content,
)
from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_schema import (
    MARKER_PROPS, SECRET_PROPS, TYPES, SchemaError,
)

SECRET_OPTIONS = ('password', 'keyring', 'encryption_key', 'master_pubkey', 'auth_token')
PVESM = '/usr/sbin/pvesm'
PVESAN_PLUGIN = '/usr/share/perl5/PVE/Storage/Custom/PVESANPlugin.pm'


def plan(module, store):
    """Everything the run would change, computed from the current files: no writes here."""
    p = module.params
    name, stype = p['name'], p['type']
    cfg = store.read()
    for warning in cfg.warnings:
        module.warn(warning)
    old = cfg.get(name)
    result = dict(cfg=cfg, old=old, new=None, secrets={}, remove_secrets=[])

    if p['state'] == 'absent':
        if old is not None and stype is not None and old.type != stype:
            raise SchemaError("storage '%s' has type '%s', not '%s'; not removing it" % (name, old.type, stype))
        if old is not None:
            cfg.remove(name)
            result['remove_secrets'] = [f for f in store.secret_paths(old.type, name) if os.path.exists(f)]
        return result

    stype = stype or (old.type if old is not None else None)
    if stype is None:
        raise SchemaError("storage '%s' does not exist; set 'type' to create it" % name)
    props = dict(p['options'])
    for key in ('content', 'nodes', 'disable', 'shared'):
        if p[key] is not None:
            if key in props:
                raise SchemaError("'%s' is given both as a module option and in 'options'; use one" % key)
            props[key] = p[key]
    props = desired_props(stype, name, props)

    tdef = TYPES[stype]
    for option in SECRET_OPTIONS:
        if p[option] is None:
            continue
        if option not in tdef.secrets:
            raise SchemaError("storage type '%s' has no secret '%s' (types with secrets: %s)" % (
                stype, option, ', '.join('%s: %s' % (t, '/'.join(sorted(d.secrets))) for t, d in sorted(TYPES.items()) if d.secrets)))
        content, extra = secret_content(stype, option, p[option])
        props.update(extra)
        result['secrets'][store.secret_path(tdef.secrets[option], name)] = content
    if stype == 'esxi' and old is None and p['password'] is None:
        raise SchemaError("an esxi storage needs 'password' when it is created (ESXiPlugin::on_add_hook)")
    if p['master_pubkey'] is not None and 'encryption-key' not in props and (old is None or 'encryption-key' not in old.props):
        raise SchemaError("'master-pubkey' can only be used together with 'encryption-key' (PBSPlugin::on_add_hook): "
                          "give encryption_key too")
    if p['purge']:
        # a key file not given goes, and with it the marker storage.cfg keeps for it
        for option, secret in tdef.secrets.items():
            if p[option] is None and secret.prop in MARKER_PROPS:
                props[secret.prop] = None

    old, new = plan_present(cfg, name, stype, props, purge=p['purge'])
    if new is not old:
        cfg.set(new)
        dropped = dropped_keys(old, new)
        if dropped:
            module.warn("storage '%s': dropped %s, unknown to Proxmox for type '%s' (Proxmox drops them too when "
                        "it writes the section)" % (name, ', '.join(repr(k) for k in dropped), stype))
    if tdef.custom and os.path.exists(PVESM) and not os.path.exists(PVESAN_PLUGIN):
        module.warn("%s is missing on this node: Proxmox drops sections of unknown types ('unsupported type') "
                    "whenever it rewrites storage.cfg, so install the plugin (role pvesan.storage.pve_host) on "
                    "every node before relying on storage '%s'" % (PVESAN_PLUGIN, name))
    result['new'] = new
    # secrets: write only what differs; with purge drop the ones not given
    result['secrets'] = dict((path, content) for path, content in result['secrets'].items()
                             if read_text(path) != content)
    if p['purge']:
        given = set(store.secret_path(tdef.secrets[o], name) for o in SECRET_OPTIONS if p[o] is not None and o in tdef.secrets)
        result['remove_secrets'] = [f for f in store.secret_paths(stype, name) if f not in given and os.path.exists(f)]
    return result


def run(module):
    p = module.params
    store = StorageCfgFile(p['config_root'])
    if not os.path.isdir(p['config_root']):
        module.fail_json(msg="config_root %s is not a directory (is this a Proxmox VE node with pve-cluster running?)"
                         % p['config_root'])

    def apply(result):
        for path, content in result['secrets'].items():
            store.write_secret(path, content)
        for path in result['remove_secrets']:
            store.remove_secret(path)
        store.write(result['cfg'], mover=module.atomic_move)

    try:
        if module.check_mode:
            result = plan(module, store)
            changed = result['new'] is not result['old'] or result['secrets'] or result['remove_secrets']
        else:
            with StorageCfgLock(p['config_root'], timeout=p['lock_timeout']) as lock:
                result = plan(module, store)   # re-read under the lock
                changed = result['new'] is not result['old'] or result['secrets'] or result['remove_secrets']
                if changed:
                    lock.check_time()
                    apply(result)
    except (SchemaError, StorageCfgError, LockError) as e:
        module.fail_json(msg=str(e))
    except (IOError, OSError) as e:
        module.fail_json(msg='%s: %s' % (getattr(e, 'filename', None) or p['config_root'], e), exception=traceback.format_exc())

    old, new = result['old'], result['new']
    secrets_changed = sorted(list(result['secrets']) + result['remove_secrets'])
    out = dict(
        changed=bool(changed),
        name=p['name'],
        storage=new.as_dict() if new is not None else {},
        section=new.render() if new is not None else '',
        created=old is None and new is not None,
        restart_needed=bool(old is None and new is not None and TYPES[new.type].custom),
        secrets_changed=secrets_changed,
    )
    if module._diff:
        before = old.render() if old is not None else ''
        after = out['section']
        if secrets_changed:
            note = ''.join('# secret file %s changed\n' % f for f in secrets_changed)
            after += note
        out['diff'] = dict(before=before, after=after,
                           before_header='%s (%s)' % (store.path, p['name']),
                           after_header='%s (%s)' % (store.path, p['name']))
    module.exit_json(**out)


class PveStorageModule(AnsibleModule):
    """A secret given inside ``options`` is refused later; it is masked before the invocation is
    logged to the host's journal (at the end of ``__init__``, unless the task has ``no_log``) and
    in every output. ``AnsibleModule(no_log=True)`` cannot do this: the controller's
    ``_ansible_no_log`` overrides it before the invocation is logged."""

    def _log_invocation(self):
        for key, value in (self.params.get('options') or {}).items():
            if key in SECRET_PROPS and value is not None:
                self.no_log_values.add(str(value))
        super(PveStorageModule, self)._log_invocation()


def main():
    module = PveStorageModule(
        argument_spec=dict(
            name=dict(type='str', required=True, aliases=['id', 'storage']),
            type=dict(type='str', choices=sorted(TYPES)),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            content=dict(type='list', elements='str'),
            nodes=dict(type='list', elements='str'),
            disable=dict(type='bool'),
            shared=dict(type='bool'),
            options=dict(type='dict', default={}),
            password=dict(type='str', no_log=True),
            keyring=dict(type='str', no_log=True),
            encryption_key=dict(type='str', no_log=True),
            master_pubkey=dict(type='str', no_log=False),
            auth_token=dict(type='str', no_log=True),
            purge=dict(type='bool', default=False),
            config_root=dict(type='path', default='/etc/pve'),
            lock_timeout=dict(type='int', default=10),
        ),
        supports_check_mode=True,
    )
    run(module)


if __name__ == '__main__':
    main()
