#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: multipath
short_description: Manage entries of multipath.conf (or a drop-in) and the multipath wwids file
version_added: 0.1.0
description:
  - Adds, changes or removes entries in the C(defaults), C(blacklist), C(blacklist_exceptions),
    C(devices), C(multipaths) and C(overrides) sections of C(/etc/multipath.conf) or of a drop-in
    file under C(/etc/multipath/conf.d/).
  - Everything the task does not name is kept as it is, comments included; only the lines of the
    named entries change.
  - The candidate file is checked with the real C(multipath -t) before it is installed; a file
    that multipath reports errors for is never installed and the errors are shown.
    C(multipath -t) reads only C(/etc/multipath.conf), so the check runs in a private mount
    namespace with a throw-away overlay over C(/etc); the host's files are not touched by it.
  - Reloads C(multipathd) (C(multipathd reconfigure)) after a change when the daemon is running.
  - Manages entries of the multipath wwids file.
author:
  - pvesan.storage developers (@pvesan)
requirements:
  - multipath-tools (C(multipath), C(multipathd)) on the target host.
  - util-linux C(unshare), root and overlayfs for the validation step.
attributes:
  check_mode:
    support: full
    description: The candidate is still validated in check mode; nothing is written or reloaded.
  diff_mode:
    support: full
    description: Shows the file(s) before and after.
options:
  path:
    description:
      - The file to edit. Either the main configuration (equal to O(config_file)) or a drop-in
        C(*.conf) file in the main configuration's C(config_dir).
      - Created when missing (and O(state=present)).
    type: path
    default: /etc/multipath.conf
  config_file:
    description:
      - The main configuration multipath reads. Used to validate a drop-in together with the
        main file it belongs to.
    type: path
    default: /etc/multipath.conf
  state:
    description:
      - V(present) ensures the given entries exist with the given settings (settings of an entry
        that are not given are kept). V(absent) removes them.
      - An entry of a list section may carry its own C(state) key, which wins over this option.
    type: str
    choices: [present, absent]
    default: present
  defaults:
    description:
      - Settings of the C(defaults) section, C(name=value). Booleans are written C(yes)/C(no).
      - With O(state=absent), or a value of C(null), the named settings are removed.
    type: dict
  overrides:
    description: Settings of the C(overrides) section, like O(defaults).
    type: dict
  blacklist:
    description:
      - Entries of the C(blacklist) section. Each entry is a dict with one key; C(devnode),
        C(wwid), C(property) or C(protocol) with a regex, or C(device) with a dict of C(vendor),
        C(product) and further settings; optionally with C(state).
    type: list
    elements: dict
  blacklist_exceptions:
    description: Entries of the C(blacklist_exceptions) section, like O(blacklist).
    type: list
    elements: dict
  devices:
    description:
      - C(device) subsections of the C(devices) section, identified by C(vendor) and C(product).
        The other keys are settings of the device (C(path_grouping_policy), C(prio), ...).
    type: list
    elements: dict
  multipaths:
    description:
      - C(multipath) subsections of the C(multipaths) section, identified by C(wwid)
        (C(alias) and other settings as further keys).
    type: list
    elements: dict
  wwids:
    description:
      - WWIDs to add to (O(state=present)) or remove from (O(state=absent)) O(wwids_file).
        Other entries of the file are kept.
    type: list
    elements: str
  wwids_file:
    description: The multipath wwids file.
    type: path
    default: /etc/multipath/wwids
  validate:
    description:
      - Check the candidate with C(multipath -t) before installing it. Turn off only where
        multipath-tools cannot run (no root, no overlayfs).
    type: bool
    default: true
  reload:
    description: Run C(multipathd reconfigure) after a change when multipathd is running.
    type: bool
    default: true
  backup:
    description: Keep a timestamped copy of a file before changing it.
    type: bool
    default: false
notes:
  - Statements must be one per line, as multipath writes them (C(name {) opens a section, C(})
    closes it). One-line sections such as C(device { vendor X }) are refused with the line number.
  - Values are written quoted except plain integers, the way C(multipath -t) prints them.
seealso:
  - name: multipath.conf(5)
    description: The configuration file format.
    link: https://manpages.debian.org/bookworm/multipath-tools/multipath.conf.5.en.html
"""

EXAMPLES = r"""
- name: Defaults and a blacklist for iSCSI multipath on a Proxmox node
  pvesan.storage.multipath:
    defaults:
      user_friendly_names: true
      find_multipaths: strict
      polling_interval: 5
    blacklist:
      - devnode: "^(ram|zram|loop|fd|md|dm-|sr|scd|st)[0-9]*"
      - device:
          vendor: QEMU
          product: "QEMU HARDDISK"
    blacklist_exceptions:
      - wwid: "36001405abcdef0123456789abcdef012"

- name: Device settings for LIO and tgt targets in a drop-in
  pvesan.storage.multipath:
    path: /etc/multipath/conf.d/pvesan.conf
    devices:
      - vendor: LIO-ORG
        product: ".*"
        path_grouping_policy: group_by_prio
        prio: alua
        no_path_retry: queue
      - vendor: IET
        product: VIRTUAL-DISK
        path_grouping_policy: multibus

- name: Alias one LUN and allow its wwid
  pvesan.storage.multipath:
    multipaths:
      - wwid: "36001405abcdef0123456789abcdef012"
        alias: vm-disks
    wwids:
      - "36001405abcdef0123456789abcdef012"

- name: Remove a device entry and a default
  pvesan.storage.multipath:
    state: absent
    devices:
      - vendor: IET
        product: VIRTUAL-DISK
    defaults:
      polling_interval:
"""

RETURN = r"""
path:
  description: The file that was managed.
  returned: always
  type: str
  sample: /etc/multipath.conf
content:
  description: The resulting content of O(path).
  returned: always
  type: str
wwids_changed:
  description: Whether the wwids file changed (or would have, in check mode).
  returned: always
  type: bool
validation_warnings:
  description: Lines C(multipath -t) printed about the candidate that are not errors.
  returned: when validated
  type: list
  elements: str
reloaded:
  description: Whether C(multipathd reconfigure) ran.
  returned: always
  type: bool
backup_file:
  description: The backup of O(path), when O(backup=true) and it changed.
  returned: changed and O(backup=true)
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.pvesan.storage.plugins.module_utils._files import atomic_write, read_text
from ansible_collections.pvesan.storage.plugins.module_utils._multipath_conf import (
    ConfError,
    SECTIONS,
    apply,
    apply_wwids,
    validate,
)


def multipathd_running(module):
    multipathd = module.get_bin_path('multipathd')
    if not multipathd:
        return None
    rc, _out, _err = module.run_command([multipathd, 'show', 'daemon'])
    return multipathd if rc == 0 else None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', default='/etc/multipath.conf'),
            config_file=dict(type='path', default='/etc/multipath.conf'),
            state=dict(type='str', choices=['present', 'absent'], default='present'),
            defaults=dict(type='dict'),
            overrides=dict(type='dict'),
            blacklist=dict(type='list', elements='dict'),
            blacklist_exceptions=dict(type='list', elements='dict'),
            devices=dict(type='list', elements='dict'),
            multipaths=dict(type='list', elements='dict'),
            wwids=dict(type='list', elements='str'),
            wwids_file=dict(type='path', default='/etc/multipath/wwids'),
            validate=dict(type='bool', default=True),
            reload=dict(type='bool', default=True),
            backup=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    # the C locale for every command: their output is parsed, translated messages would not match
    module.run_command_environ_update = dict(LANG='C', LC_ALL='C', LC_MESSAGES='C')
    p = module.params
    path, state = p['path'], p['state']
    result = dict(changed=False, path=path, wwids_changed=False, reloaded=False)
    diffs = []

    wanted = dict((s, p[s]) for s in SECTIONS if p[s] is not None)
    before = read_text(path)
    try:
        after = apply(before or '', wanted, state) if wanted else (before or '')
    except ConfError as e:
        module.fail_json(msg='%s: %s' % (path, to_native(e)), **result)
    conf_changed = after != (before or '') and not (before is None and not after)
    result['content'] = before or ''

    if conf_changed:
        if p['validate']:
            multipath = module.get_bin_path('multipath', required=True)
            unshare = module.get_bin_path('unshare', required=True)
            main_text = None
            if os.path.abspath(path) != os.path.abspath(p['config_file']):
                main_text = read_text(p['config_file'])
            try:
                errors, warnings, _merged = validate(
                    module.run_command, multipath, unshare,
                    after, path, p['config_file'], main_text)
            except ConfError as e:
                module.fail_json(msg=to_native(e), **result)
            result['validation_warnings'] = warnings
            if errors:
                module.fail_json(
                    msg='multipath -t rejects the new %s, nothing was changed: %s' % (path, '; '.join(errors)),
                    validation_errors=errors, candidate=after, **result)
        result['content'] = after
        diffs.append(dict(before_header=path, after_header=path, before=before or '', after=after))
        if not module.check_mode:
            if p['backup'] and before is not None:
                result['backup_file'] = module.backup_local(path)
            mode = os.stat(path).st_mode & 0o7777 if before is not None else 0o644
            atomic_write(path, after, mode, module.atomic_move, make_dirs=True)

    if p['wwids'] is not None:
        wwids_before = read_text(p['wwids_file'])
        try:
            wwids_after = apply_wwids(wwids_before, p['wwids'], state)
        except ConfError as e:
            module.fail_json(msg='wwids: %s' % to_native(e), **result)
        if wwids_after != (wwids_before or '') and not (wwids_before is None and state == 'absent'):
            result['wwids_changed'] = True
            diffs.append(dict(before_header=p['wwids_file'], after_header=p['wwids_file'],
                              before=wwids_before or '', after=wwids_after))
            if not module.check_mode:
                atomic_write(p['wwids_file'], wwids_after, 0o644, module.atomic_move, make_dirs=True)

    result['changed'] = conf_changed or result['wwids_changed']
    if result['changed'] and p['reload'] and not module.check_mode:
        multipathd = multipathd_running(module)
        if multipathd:
            rc, out, err = module.run_command([multipathd, 'reconfigure'])
            if rc != 0:
                module.fail_json(msg='multipathd reconfigure failed (the new file is installed): %s %s' % (out, err), **result)
            result['reloaded'] = True
    if module._diff and diffs:
        result['diff'] = diffs
    module.exit_json(**result)


if __name__ == '__main__':
    main()
