#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: iscsi_target
short_description: Declarative state of one iSCSI target (tgt or LIO)
version_added: 0.1.0
description:
  - Creates, updates in place or removes one iSCSI target on a target host; its LUNs (backing
    file, block device or zvol), initiator ACLs, one-way and mutual CHAP and target attributes.
  - Changes are applied to the running target where it allows it; adding or removing a LUN,
    an ACL or CHAP does not drop the sessions of logged-in initiators. Only a LUN whose backing
    store, backing-store type or block size changes is re-created.
  - C(tgt) backend; runtime changes through C(tgtadm), and a persistent
    C(<config_dir>/<iqn>.conf) that tgt-admin loads when tgtd starts, so the target survives
    a tgtd restart.
  - C(lio) backend; the kernel target through rtslib-fb, saving the configuration once per
    run (not once per change).
  - LUN numbers start at 1 on both backends (LUN 0 of a tgt target is tgt's controller), so the
    URL of a target's first disk is C(iscsi://<portal>/<iqn>/1) everywhere.
author:
  - pvesan.storage developers (@pvesan)
requirements:
  - C(tgt) (tgtd, tgtadm, tgt-admin) for O(backend=tgt).
  - python3-rtslib-fb and the kernel target (target_core_mod, iscsi_target_mod) for O(backend=lio).
attributes:
  check_mode:
    support: full
    description: Reports the changes (and, for tgt, the tgtadm commands) it would make.
  diff_mode:
    support: full
    description: Shows the target before and after, and the persistent tgt file; passwords are masked.
options:
  iqn:
    description: The target's IQN, e.g. C(iqn.2026-11.io.pvesan:storage1.vm-100).
    type: str
    required: true
  state:
    description: V(absent) deletes the target, ending its sessions.
    type: str
    choices: [present, absent]
    default: present
  backend:
    description: Target implementation.
    type: str
    choices: [tgt, lio]
    default: tgt
  portals:
    description:
      - C(ip:port) the target listens on (C([::]:3260) for IPv6).
      - With tgt, portals belong to the whole tgtd; missing ones are added, others are left alone.
      - With lio, the target portal group has exactly these portals.
    type: list
    elements: str
  luns:
    description: The target's LUNs. LUNs not listed are removed.
    type: list
    elements: dict
    default: []
    suboptions:
      lun:
        description: LUN number (1 and up); defaults to the position in the list, from 1.
        type: int
      path:
        description: Backing store; a file, a block device or a zvol (C(/dev/zvol/<pool>/<name>)).
        type: path
        required: true
      serial:
        description: SCSI serial number (unit serial VPD page); multipath uses it to find paths.
        type: str
      vendor:
        description: SCSI vendor id (up to 8 characters).
        type: str
      product:
        description: SCSI product id (up to 16 characters).
        type: str
      readonly:
        description: Export read-only.
        type: bool
        default: false
      write_cache:
        description: Write-back cache of the LUN; unset leaves the backend's default.
        type: bool
      bstype:
        description: tgt backing-store type (V(rdwr), V(aio), ...); tgt only.
        type: str
      bsoflags:
        description: tgt backing-store open flags (V(direct), V(sync)); tgt only.
        type: str
      block_size:
        description: Logical block size in bytes.
        type: int
  initiators:
    description:
      - Initiators allowed to log in; IQNs, or IP addresses/CIDR networks (tgt). An empty list
        allows any initiator.
    type: list
    elements: str
    default: []
  chap:
    description: One-way CHAP; the credentials initiators log in with.
    type: dict
    suboptions:
      user:
        description: CHAP user name.
        type: str
        required: true
      password:
        description: CHAP secret (12-16 characters for most initiators).
        type: str
        required: true
  mutual_chap:
    description: Mutual CHAP; the credentials the target answers with. Needs O(chap).
    type: dict
    suboptions:
      user:
        description: CHAP user name.
        type: str
        required: true
      password:
        description: CHAP secret.
        type: str
        required: true
  attributes:
    description:
      - Target parameters, C(name=value). tgt; C(tgtadm --mode target --op update) names
        (C(MaxRecvDataSegmentLength), C(HeaderDigest), C(nop_interval), ...); only the iSCSI
        negotiation parameters are written to the persistent file (tgt-admin ignores the rest).
        lio; target portal group attributes and parameters (C(authentication), C(demo_mode_write_protect), ...).
    type: dict
    default: {}
  tgt_control_port:
    description: tgtd control port (C(tgtd -C)); 0 is the system tgtd.
    type: int
    default: 0
  config_dir:
    description: Directory of the persistent tgt file (tgt only).
    type: path
    default: /etc/tgt/conf.d
  persist:
    description: Write (or remove) the persistent tgt file (tgt only).
    type: bool
    default: true
notes:
  - tgt CHAP accounts are global to tgtd; a user name used by several targets must have one
    password.
  - tgt cannot report passwords, vendor/product ids or the write-cache setting; the module
    compares them with its persistent file, so with O(persist=false) they are applied on every run.
seealso:
  - module: pvesan.storage.iscsi_target_info
"""

EXAMPLES = r"""
- name: A target for one zvol, limited to two Proxmox nodes, with mutual CHAP
  pvesan.storage.iscsi_target:
    iqn: iqn.2026-11.io.pvesan:storage1.vm-100
    portals: ["192.0.2.10:3260"]
    luns:
      - path: /dev/zvol/tank/vm-100-disk-0
        serial: vm100disk0
        vendor: PVESAN
        product: VDISK
        write_cache: false
    initiators:
      - iqn.1993-08.org.debian:01:pve1
      - iqn.1993-08.org.debian:01:pve2
    chap:
      user: pve
      password: "{{ vault_chap_secret }}"
    mutual_chap:
      user: storage1
      password: "{{ vault_chap_target_secret }}"

- name: The same target on the kernel target
  pvesan.storage.iscsi_target:
    backend: lio
    iqn: iqn.2026-11.io.pvesan:storage1.vm-100
    portals: ["192.0.2.10:3260"]
    luns:
      - path: /dev/zvol/tank/vm-100-disk-0
        serial: vm100disk0

- name: Remove it
  pvesan.storage.iscsi_target:
    iqn: iqn.2026-11.io.pvesan:storage1.vm-100
    state: absent
"""

RETURN = r"""
changes:
  description: What changed (or would change), one line each.
  returned: always
  type: list
  elements: str
  sample: ["lun 2 created", "initiator iqn.1993-08.org.debian:01:pve2 bound"]
commands:
  description: tgtadm commands run (or, in check mode, that would run), passwords masked.
  returned: backend is tgt
  type: list
  elements: str
target:
  description: The target as the backend reports it after the run (as wanted, in check mode); no passwords.
  returned: state is present
  type: dict
config_file:
  description: The persistent tgt file.
  returned: backend is tgt
  type: str
"""

import os
import re
import uuid

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.pvesan.storage.plugins.module_utils._files import atomic_write, read_text
from ansible_collections.pvesan.storage.plugins.module_utils import _lio as lio  # loads without rtslib-fb
from ansible_collections.pvesan.storage.plugins.module_utils import _tgt_conf as tgt_conf
from ansible_collections.pvesan.storage.plugins.module_utils._tgt import (
    DATA_LUN,
    WRITE_CACHE_OFF_MODE_PAGE,
    Tgtadm,
    TgtadmError,
    apply_target,
    next_free_tid,
    read_target_attributes,
    read_targets,
    remove_target,
)

LUN_SPEC = dict(
    lun=dict(type='int'),
    path=dict(type='path', required=True),
    serial=dict(type='str'),
    vendor=dict(type='str'),
    product=dict(type='str'),
    readonly=dict(type='bool', default=False),
    write_cache=dict(type='bool'),
    bstype=dict(type='str'),
    bsoflags=dict(type='str'),
    block_size=dict(type='int'),
)
CHAP_SPEC = dict(user=dict(type='str', required=True), password=dict(type='str', required=True, no_log=True))
_SECRET_LINE = re.compile(r'^(\s*(?:incoming|outgoing)user\s+\S+\s+)\S+', re.M)


def wanted_luns(module):
    luns = []
    for index, lun in enumerate(module.params['luns']):
        number = lun['lun'] if lun['lun'] is not None else index + DATA_LUN
        if number < DATA_LUN:
            module.fail_json(msg='LUN %d: LUN numbers start at %d (LUN 0 is the tgt controller)' % (number, DATA_LUN))
        if not os.path.exists(lun['path']):
            msg = 'LUN %d: backing store %s does not exist' % (number, lun['path'])
            if not module.check_mode:
                module.fail_json(msg=msg)
            module.warn(msg + ' (yet: check mode)')
        luns.append(dict(lun, lun=number))
    numbers = [lun['lun'] for lun in luns]
    if len(set(numbers)) != len(numbers):
        module.fail_json(msg='LUN numbers must be unique, got %s' % numbers)
    return luns


def summary(target):
    """Readable target state for diffs (no secrets)."""
    if not target:
        return ''
    lines = ['iqn %s' % target['iqn']]
    for lun in sorted(target.get('luns') or [], key=lambda item: item['lun']):
        extras = ' '.join('%s=%s' % (k, lun[k]) for k in ('serial', 'vendor', 'product', 'readonly', 'write_cache')
                          if lun.get(k) not in (None, ''))
        lines.append('lun %d %s %s' % (lun['lun'], lun['path'], extras))
    lines.append('initiators %s' % (' '.join(target.get('initiators') or []) or 'ALL'))
    for key in ('chap', 'mutual_chap'):
        if target.get(key):
            lines.append('%s user %s' % (key, target[key]['user']))
    for name, value in sorted((target.get('attributes') or {}).items()):
        lines.append('attribute %s=%s' % (name, value))
    return '\n'.join(lines) + '\n'


def public(target):
    """A target dict without passwords, for the result."""
    if not target:
        return None
    out = dict(target)
    for key in ('chap', 'mutual_chap'):
        if out.get(key):
            out[key] = {'user': out[key]['user']}
    return out


class TgtBackend(object):
    """tgtd at runtime through tgtadm.py, plus the persistent tgt-admin file."""

    def __init__(self, module):
        self.module = module
        p = module.params
        self.commands = []
        tgtadm_path = module.get_bin_path('tgtadm', required=True)

        def run(argv):
            op = argv[argv.index('--op') + 1] if '--op' in argv else 'show'
            if op == 'show':
                return module.run_command(argv)
            words = argv[1:]
            self.commands.append(' '.join('********' if i and words[i - 1] == '--password' else w
                                          for i, w in enumerate(words)))
            if module.check_mode:
                return 0, '', ''
            return module.run_command(argv)

        self.tgt = Tgtadm(p['tgt_control_port'], tgtadm_path, run=run)
        self.config_file = os.path.join(p['config_dir'], tgt_conf.file_name(p['iqn']))

    def fail(self, msg, **kwargs):
        self.module.fail_json(msg=msg, commands=self.commands, config_file=self.config_file, **kwargs)

    def run(self):
        module, p = self.module, self.module.params
        try:
            targets = read_targets(self.tgt)
        except TgtadmError as e:
            self.fail('cannot reach tgtd on control port %d (is it running?): %s' % (p['tgt_control_port'], to_native(e)))
        current = targets.get(p['iqn'])
        conf_before = read_text(self.config_file)
        try:
            known = tgt_conf.parse(conf_before) or {}
        except ValueError:
            known = {}
        result = dict(commands=self.commands, config_file=self.config_file)
        diffs = []
        try:
            if p['state'] == 'absent':
                changes = remove_target(self.tgt, current) if current else []
                before, after = summary(current), ''
                if p['persist'] and conf_before is not None:
                    changes.append('%s removed' % self.config_file)
                    diffs.append(dict(before_header=self.config_file, after_header=self.config_file,
                                      before=_SECRET_LINE.sub(r'\1********', conf_before), after=''))
                    if not module.check_mode:
                        os.unlink(self.config_file)
            else:
                desired, changes = self.converge(current, targets, known)
                before, after = summary(current), summary(desired)
                if p['persist']:
                    try:
                        text = tgt_conf.render(desired)
                    except ValueError as e:
                        self.fail('cannot write %s: %s' % (self.config_file, to_native(e)))
                    if text != conf_before:
                        changes.append('%s written' % self.config_file)
                        diffs.append(dict(before_header=self.config_file, after_header=self.config_file,
                                          before=_SECRET_LINE.sub(r'\1********', conf_before or ''),
                                          after=tgt_conf.render(desired, mask_secrets=True)))
                        if not module.check_mode:
                            atomic_write(self.config_file, text, 0o600, module.atomic_move, make_dirs=True)
                if module.check_mode:
                    result['target'] = public(desired)
                else:
                    result['target'] = public(read_targets(self.tgt).get(p['iqn']))
        except TgtadmError as e:
            self.fail('tgtadm failed: %s' % to_native(e))
        if before != after:
            diffs.insert(0, dict(before_header='%s (target)' % p['iqn'], after_header='%s (target)' % p['iqn'],
                                 before=before, after=after))
        result['changes'] = changes
        return result, diffs

    def converge(self, current, targets, known):
        p = self.module.params
        tid = current['tid'] if current else next_free_tid(t['tid'] for t in targets.values())
        luns = wanted_luns(self.module)
        desired = {'iqn': p['iqn'], 'tid': tid, 'luns': luns, 'initiators': list(p['initiators']),
                   'chap': p['chap'], 'mutual_chap': p['mutual_chap'], 'attributes': {}}
        if p['mutual_chap'] and not p['chap']:
            self.fail('mutual_chap needs chap: the target only authenticates itself to initiators that log in with CHAP')
        changes = []
        for portal in p['portals'] or []:
            if portal not in self.tgt.show_portals():
                self.tgt.new_portal(portal)
                changes.append('portal %s added' % portal)

        # tgtd cannot show passwords: the persistent file remembers the ones it was set up with,
        # and the library sets an account again only when its password is not one of those.
        known_passwords = dict((c['user'], c['password']) for c in (known.get('chap'), known.get('mutual_chap')) if c)
        current_attrs = read_target_attributes(self.tgt, tid) if current else {}
        to_apply = dict(desired, attributes=dict((k, str(v)) for k, v in p['attributes'].items()
                                                 if current_attrs.get(k) != str(v)))
        desired['attributes'] = dict((k, str(v)) for k, v in p['attributes'].items())

        changes += apply_target(self.tgt, to_apply, current, all_targets=targets, known_passwords=known_passwords)
        changes += ['attribute %s=%s' % item for item in sorted(to_apply['attributes'].items())]

        # What --op show cannot report (vendor, product, write cache) is compared with the file.
        have_paths = dict((lun['lun'], lun['path']) for lun in (current or {}).get('luns') or [])
        known_luns = dict((lun['lun'], lun) for lun in known.get('luns') or [])
        for lun in luns:
            if have_paths.get(lun['lun']) != lun['path']:
                continue  # created just now by apply_target, with every parameter
            old = known_luns.get(lun['lun']) or {}
            params = dict((param, lun[key]) for key, param in (('vendor', 'vendor_id'), ('product', 'product_id'))
                          if lun.get(key) and old.get(key) != lun[key])
            if params:
                self.tgt.update_lun(tid, lun['lun'], params)
                changes.append('lun %d %s updated' % (lun['lun'], ', '.join(sorted(params))))
            if lun.get('write_cache') is not None and old.get('write_cache') != lun['write_cache']:
                page = tgt_conf.WRITE_CACHE_ON_MODE_PAGE if lun['write_cache'] else WRITE_CACHE_OFF_MODE_PAGE
                self.tgt.update_lun(tid, lun['lun'], page)
                changes.append('lun %d write cache %s' % (lun['lun'], 'on' if lun['write_cache'] else 'off'))
        return desired, changes


def lio_tpg_attributes(iqn, names):
    """Current values of the named TPG attributes (lio.py reads only a few), via rtslib-fb."""
    rts = lio.rtslib()
    try:
        target = rts.Target(rts.FabricModule('iscsi'), iqn, mode='lookup')
    except rts.RTSLibNotInCFS:
        return {}
    values = {}
    for tpg in target.tpgs:
        if tpg.tag == lio.TPG_TAG:
            for name in names:
                try:
                    values[name] = str(tpg.get_attribute(name))
                except Exception as e:  # rtslib raises RTSLibError for an unknown attribute
                    raise lio.LioError('TPG attribute %s: %s' % (name, e))
    return values


class LioBackend(object):
    """The kernel target through the shared rtslib-fb layer (module_utils/_lio.py); the
    configuration is saved once at the end of a run that changed something."""

    def __init__(self, module):
        self.module = module

    def desired(self):
        p = self.module.params
        luns = []
        for lun in wanted_luns(self.module):
            # lio.py names storage objects and matches LUNs by serial: give every LUN a stable one.
            serial = lun['serial'] or str(uuid.uuid5(uuid.NAMESPACE_URL, '%s/%s' % (p['iqn'], lun['path'])))
            luns.append({'lun': lun['lun'], 'path': lun['path'], 'serial': serial, 'readonly': lun['readonly'],
                         'write_cache': lun['write_cache'], 'vendor': None, 'product': None})
            if lun['vendor'] or lun['product'] or lun['bstype'] or lun['bsoflags'] or lun['block_size']:
                self.module.warn('LUN %d: vendor, product, bstype, bsoflags and block_size are tgt options; '
                                 'the lio backend ignores them' % lun['lun'])
        return {'iqn': p['iqn'], 'luns': luns, 'initiators': sorted(p['initiators']), 'chap': p['chap'],
                'mutual_chap': p['mutual_chap'], 'portals': sorted(p['portals'] or ['0.0.0.0:3260']),
                'attributes': dict((k, str(v)) for k, v in p['attributes'].items())}

    def run(self):
        module, p = self.module, self.module.params
        desired = None
        try:
            current = lio.read_target(p['iqn'])
            if current is not None and p['attributes']:
                current['attributes'].update(lio_tpg_attributes(p['iqn'], p['attributes']))
            if p['state'] == 'absent':
                changes = ['target %s deleted' % p['iqn']] if current else []
                if changes and not module.check_mode:
                    changes = lio.remove_target(p['iqn'])
            else:
                if p['mutual_chap'] and not p['chap']:
                    module.fail_json(msg='mutual_chap needs chap: the target only authenticates itself to '
                                         'initiators that log in with CHAP')
                desired = self.desired()
                # the library's own plan: check mode reports what a run makes
                steps = lio.plan_target(desired, current)
                changes = [step.change for step in steps if step.change]
                if changes and not module.check_mode:
                    lio.apply_steps(steps, p['iqn'] if current is None else None)
            if changes and not module.check_mode:
                lio.rtslib().RTSRoot().save_to_file()  # once per run, not once per change
            after = desired if module.check_mode or desired is None else lio.read_target(p['iqn'])
        except lio.LioError as e:
            module.fail_json(msg=to_native(e))
        result = dict(changes=changes)
        if p['state'] == 'present':
            result['target'] = public(after)
        diffs = []
        if changes:
            diffs.append(dict(before_header='%s (target)' % p['iqn'], after_header='%s (target)' % p['iqn'],
                              before=summary(current), after=summary(desired)))
        return result, diffs


def main():
    module = AnsibleModule(
        argument_spec=dict(
            iqn=dict(type='str', required=True),
            state=dict(type='str', default='present', choices=['present', 'absent']),
            backend=dict(type='str', default='tgt', choices=['tgt', 'lio']),
            portals=dict(type='list', elements='str'),
            luns=dict(type='list', elements='dict', options=LUN_SPEC, default=[]),
            initiators=dict(type='list', elements='str', default=[]),
            chap=dict(type='dict', options=CHAP_SPEC),
            mutual_chap=dict(type='dict', options=CHAP_SPEC),
            attributes=dict(type='dict', default={}),
            tgt_control_port=dict(type='int', default=0),
            config_dir=dict(type='path', default='/etc/tgt/conf.d'),
            persist=dict(type='bool', default=True),
        ),
        supports_check_mode=True,
    )
    # the C locale for every command: their output is parsed, translated messages would not match
    module.run_command_environ_update = dict(LANG='C', LC_ALL='C', LC_MESSAGES='C')
    if not re.match(r'^(iqn\.[0-9]{4}-[0-9]{2}\.[^ ]+|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$', module.params['iqn']):
        module.fail_json(msg='invalid target name %r: use iqn.YYYY-MM.reversed.domain[:name], eui. or naa.' % module.params['iqn'])
    backend = TgtBackend(module) if module.params['backend'] == 'tgt' else LioBackend(module)
    result, diffs = backend.run()
    result['changed'] = bool(result['changes'])
    if module._diff and diffs:
        result['diff'] = diffs
    module.exit_json(**result)


if __name__ == '__main__':
    main()
