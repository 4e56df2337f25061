#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: iscsi_target_info
short_description: List the iSCSI targets of a tgt or LIO target host
version_added: 0.1.0
description:
  - Returns every target (or the one named by O(iqn)) with its LUNs, initiator ACLs, CHAP user
    names, portals, attributes and sessions, in the form O(pvesan.storage.iscsi_target#module:iqn)
    and its other options use.
author:
  - pvesan.storage developers (@pvesan)
requirements:
  - C(tgt) for O(backend=tgt); python3-rtslib-fb and the kernel target for O(backend=lio).
attributes:
  check_mode:
    support: full
    description: Read-only.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to show.
options:
  backend:
    description: Target implementation.
    type: str
    choices: [tgt, lio]
    default: tgt
  iqn:
    description: Only this target.
    type: str
  tgt_control_port:
    description: tgtd control port (C(tgtd -C)); 0 is the system tgtd.
    type: int
    default: 0
notes:
  - CHAP passwords are never returned; tgt cannot report vendor/product ids or the write cache
    (they are C(null)).
seealso:
  - module: pvesan.storage.iscsi_target
"""

EXAMPLES = r"""
- name: List the targets of the system tgtd
  pvesan.storage.iscsi_target_info:
  register: iscsi

- name: Show who is logged in to one target
  ansible.builtin.debug:
    msg: "{{ (iscsi.targets | selectattr('iqn', 'equalto', 'iqn.2026-11.io.pvesan:storage1.vm-100') | first).sessions }}"
"""

RETURN = r"""
targets:
  description: The targets, sorted by IQN.
  returned: always
  type: list
  elements: dict
  contains:
    iqn:
      description: Target name.
      type: str
    tid:
      description: tgt target id (tgt only).
      type: int
    luns:
      description: LUNs (C(lun), C(path), C(serial), C(vendor), C(product), C(readonly), C(write_cache), C(size) in bytes).
      type: list
      elements: dict
    initiators:
      description: Initiator ACL entries; empty with C(allow_all) means any initiator.
      type: list
      elements: str
    chap:
      description: C({user}) of one-way CHAP, or null.
      type: dict
    mutual_chap:
      description: C({user}) of mutual CHAP, or null.
      type: dict
    portals:
      description: C(ip:port) the target listens on.
      type: list
      elements: str
    attributes:
      description: Target parameters.
      type: dict
    sessions:
      description: Logged-in initiators.
      type: list
      elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.pvesan.storage.plugins.module_utils import _lio as lio  # loads without rtslib-fb
from ansible_collections.pvesan.storage.plugins.module_utils._tgt import (
    Tgtadm,
    TgtadmError,
    read_target_attributes,
    read_targets,
)


def public(target):
    out = dict(target)
    for key in ('chap', 'mutual_chap'):
        if out.get(key):
            out[key] = {'user': out[key]['user']}
    return out


def tgt_targets(module):
    p = module.params
    tgt = Tgtadm(p['tgt_control_port'], module.get_bin_path('tgtadm', required=True),
                 run=module.run_command)
    try:
        targets = read_targets(tgt)
        portals = tgt.show_portals()
        wanted = [t for iqn, t in sorted(targets.items()) if p['iqn'] in (None, iqn)]
        for target in wanted:
            target['portals'] = portals
            target['attributes'] = read_target_attributes(tgt, target['tid'])
    except TgtadmError as e:
        module.fail_json(msg='cannot read tgtd on control port %d (is it running?): %s' % (p['tgt_control_port'], to_native(e)))
    return wanted


def lio_targets(module):
    try:
        targets = lio.read_targets()
    except lio.LioError as e:
        module.fail_json(msg=to_native(e))
    return [t for iqn, t in sorted(targets.items()) if module.params['iqn'] in (None, iqn)]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backend=dict(type='str', default='tgt', choices=['tgt', 'lio']),
            iqn=dict(type='str'),
            tgt_control_port=dict(type='int', default=0),
        ),
        supports_check_mode=True,
    )
    # the C locale for every command: their output is parsed, translated messages would not match
    module.run_command_environ_update = dict(LANG='C', LC_ALL='C', LC_MESSAGES='C')
    targets = tgt_targets(module) if module.params['backend'] == 'tgt' else lio_targets(module)
    module.exit_json(changed=False, targets=[public(t) for t in targets])


if __name__ == '__main__':
    main()
