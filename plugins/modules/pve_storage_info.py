#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pve_storage_info
short_description: Read the storage definitions of Proxmox VE's /etc/pve/storage.cfg
version_added: 0.1.0
description:
  - Parses C(storage.cfg) with the same strict parser as M(pvesan.storage.pve_storage) and returns
    every storage with its properties, in file order.
  - Secrets are never returned. Secret-looking properties found in the file itself are redacted,
    and for the secrets Proxmox keeps under C(priv/) only the presence of the file is reported.
  - Fails with the line number when the file is malformed (CRLF line endings, a header without an
    empty line before it, a value Proxmox would reject, a duplicate ID, ...).
author:
  - pvesan.storage developers (@pvesan)
attributes:
  check_mode:
    support: full
    description: This module only reads.
extends_documentation_fragment:
  - pvesan.storage.pve_config

options:
  name:
    description:
      - Return only this storage. An unknown ID gives an empty result, not an error.
    type: str
notes:
  - Proxmox also makes a C(local) storage (dir, C(/var/lib/vz)) exist when the file lacks it; this
    module reports only what the file contains and sets RV(local_implicit) in that case.
seealso:
  - module: pvesan.storage.pve_storage
"""

EXAMPLES = r"""
- name: Read all storages
  pvesan.storage.pve_storage_info:
  register: pve

- name: Show the pvesan storages
  ansible.builtin.debug:
    msg: "{{ pve.storages | dict2items | selectattr('value.type', 'equalto', 'pvesan') | map(attribute='key') }}"

- name: Read one storage from a copy of /etc/pve
  pvesan.storage.pve_storage_info:
    name: local-lvm
    config_root: /srv/pve-backup/etc-pve
"""

RETURN = r"""
storages:
  description: Storage ID -> properties (with C(type)), as typed values; secrets redacted.
  returned: always
  type: dict
  sample: {"local": {"type": "dir", "path": "/var/lib/vz", "content": ["backup", "iso", "vztmpl"]}}
order:
  description: Storage IDs in file order.
  returned: always
  type: list
  elements: str
  sample: ["local", "local-lvm"]
secret_files:
  description: Storage ID -> secret files under C(priv/) that exist for it (paths only).
  returned: always
  type: dict
  sample: {"san1": ["/etc/pve/priv/storage/san1.pw"]}
local_implicit:
  description: True when the file has no C(local) storage, which Proxmox then adds on its own.
  returned: always
  type: bool
warnings_found:
  description: Things Proxmox would drop with a warning (unknown properties or storage types), kept as they are.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_cfg import StorageCfgError, StorageCfgFile
from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_schema import SECRET_PROPS

REDACTED = 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str'),
            config_root=dict(type='path', default='/etc/pve'),
        ),
        supports_check_mode=True,
    )
    store = StorageCfgFile(module.params['config_root'])
    try:
        cfg = store.read()
    except StorageCfgError as e:
        module.fail_json(msg=str(e))
    except (IOError, OSError) as e:
        module.fail_json(msg='cannot read %s: %s' % (store.path, e))

    storages, secret_files = {}, {}
    order = [sid for sid in cfg.order() if module.params['name'] in (None, sid)]
    for sid in order:
        section = cfg.get(sid)
        data = section.as_dict()
        for key in data:
            if key in SECRET_PROPS:
                data[key] = REDACTED
        storages[sid] = data
        present = [f for f in store.secret_paths(section.type, sid) if os.path.exists(f)]
        if present:
            secret_files[sid] = present
    module.exit_json(changed=False, storages=storages, order=order, secret_files=secret_files,
                     local_implicit=cfg.get('local') is None, warnings_found=cfg.warnings)


if __name__ == '__main__':
    main()
