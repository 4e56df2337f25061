#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: zfs_pool
short_description: Create, grow, import, export and destroy ZFS pools declaratively
version_added: 0.1.0
description:
  - Creates a ZFS pool with the given vdev layout (stripe, mirror, raidz1/2/3, draid1/2/3 with its
    parameters) plus special, dedup, log, cache and spare vdevs; sets pool properties, C(ashift),
    C(autotrim) and properties of the pool's root dataset.
  - On an existing pool it adds the vdevs that are missing (C(zpool add)), grows mirrors in place
    (C(zpool attach)) and sets properties that differ. A second run with the same options
    changes nothing, whatever way the disks are named; disks given as C(/dev/disk/by-id),
    C(by-path) links or short names are resolved to the devices C(zpool status -P -L) reports,
    and a whole disk matches the partition ZFS created on it (found through sysfs, also for
    multipath maps partitioned by kpartx).
  - Destructive changes (removing vdevs, a different layout on the same disks, destroying the
    pool) happen only with O(allow_destroy=true); otherwise the module fails and lists what would
    have to be destroyed.
  - A pool that exists but is not imported is imported (never re-created) by O(state=present).
  - Only the vdev classes whose option is given are compared; e.g. without O(cache) the pool's
    cache devices are left alone, and O(cache=[]) means no cache devices.
author:
  - pvesan.storage developers (@pvesan)
requirements:
  - OpenZFS 2.1 or later (C(zpool), C(zfs)) on the target host.
attributes:
  check_mode:
    support: full
    description: Returns the exact commands it would run in RV(commands).
  diff_mode:
    support: full
    description: Shows the vdev layout and the managed properties before and after.
options:
  name:
    description:
      - Pool name. Rules of the Proxmox VE admin guide apply; it begins with a letter, contains
        only letters, digits, C(-), C(_), C(.), C(:) or space, does not begin with C(mirror),
        C(raidz), C(draid) or C(spare), and is not C(log).
    type: str
    required: true
  state:
    description:
      - V(present) creates the pool (or imports it when it exists but is not imported) and
        converges layout and properties.
      - V(absent) destroys the pool (needs O(allow_destroy=true)).
      - V(exported) exports it; V(imported) imports it without changing anything else.
    type: str
    choices: [present, absent, exported, imported]
    default: present
  vdevs:
    description: Data vdevs, in order.
    type: list
    elements: dict
    suboptions:
      type:
        description:
          - V(stripe) adds each disk as its own top-level vdev.
          - For V(draid1)-V(draid3), see O(vdevs[].draid_data), O(vdevs[].draid_spares) and
            O(vdevs[].draid_children).
        type: str
        choices: [stripe, mirror, raidz1, raidz2, raidz3, draid1, draid2, draid3]
        default: stripe
      disks:
        description: Devices (paths, by-id/by-path links or short names), or files.
        type: list
        elements: str
        required: true
      draid_data:
        description: dRAID data disks per redundancy group (OpenZFS default min(8, children - parity - spares)).
        type: int
      draid_spares:
        description: dRAID distributed spares (default 0).
        type: int
      draid_children:
        description: dRAID children; must equal the number of disks when given.
        type: int
  special:
    description: Special allocation class vdevs (metadata, small blocks); V(stripe) or V(mirror).
    type: list
    elements: dict
    suboptions:
      type:
        description: Vdev type.
        type: str
        choices: [stripe, mirror]
        default: stripe
      disks:
        description: Devices.
        type: list
        elements: str
        required: true
  dedup:
    description: Dedup table vdevs; V(stripe) or V(mirror).
    type: list
    elements: dict
    suboptions:
      type:
        description: Vdev type.
        type: str
        choices: [stripe, mirror]
        default: stripe
      disks:
        description: Devices.
        type: list
        elements: str
        required: true
  log:
    description: Separate intent log (SLOG) vdevs; V(stripe) or V(mirror).
    type: list
    elements: dict
    suboptions:
      type:
        description: Vdev type.
        type: str
        choices: [stripe, mirror]
        default: stripe
      disks:
        description: Devices.
        type: list
        elements: str
        required: true
  cache:
    description: L2ARC cache devices.
    type: list
    elements: str
  spares:
    description: Hot spare devices.
    type: list
    elements: str
  ashift:
    description:
      - Sector size exponent (12 for 4K sectors) for the new pool and every vdev added later.
        It cannot change for existing vdevs; on an existing pool only the pool's default for new
        vdevs is set.
    type: int
  autotrim:
    description: Set the C(autotrim) pool property.
    type: bool
  properties:
    description: Pool properties (C(zpool create -o), later C(zpool set)), e.g. C(autoexpand), C(failmode), C(comment).
    type: dict
    default: {}
  filesystem_properties:
    description:
      - Properties of the pool's root dataset (C(zpool create -O), later C(zfs set)), e.g.
        C(compression), C(atime), C(xattr), C(mountpoint), C(recordsize).
    type: dict
    default: {}
  force:
    description: Pass C(-f) to C(zpool create/add/attach) (disks with old labels, mismatched replication).
    type: bool
    default: false
  allow_destroy:
    description:
      - Allow destructive changes; C(zpool remove) of vdevs no longer wanted, destroying and
        re-creating the pool when the wanted layout cannot be reached in place, and
        O(state=absent). All data on a destroyed pool is lost.
    type: bool
    default: false
  import_dirs:
    description: Directories searched for pool devices on import (C(zpool import -d)).
    type: list
    elements: path
    default: []
notes:
  - When a re-create is allowed and needed, vdev classes whose option is not given are
    re-created as C(zpool status) reports them.
seealso:
  - name: zpoolconcepts(7)
    description: Vdev types and classes.
    link: https://openzfs.github.io/openzfs-docs/man/master/7/zpoolconcepts.7.html
"""

EXAMPLES = r"""
- name: RAID10 pool for VM disks, as the Proxmox admin guide suggests
  pvesan.storage.zfs_pool:
    name: tank
    ashift: 12
    autotrim: true
    vdevs:
      - type: mirror
        disks: [/dev/disk/by-id/ata-DISK_A, /dev/disk/by-id/ata-DISK_B]
      - type: mirror
        disks: [/dev/disk/by-id/ata-DISK_C, /dev/disk/by-id/ata-DISK_D]
    log:
      - type: mirror
        disks: [/dev/disk/by-id/nvme-SLOG_A-part1, /dev/disk/by-id/nvme-SLOG_B-part1]
    cache: [/dev/disk/by-id/nvme-SLOG_A-part2]
    filesystem_properties:
      compression: lz4
      atime: "off"
      xattr: sa

- name: dRAID2 with 4 data disks and one distributed spare over 11 disks, plus a special mirror
  pvesan.storage.zfs_pool:
    name: bulk
    vdevs:
      - type: draid2
        draid_data: 4
        draid_spares: 1
        disks: "{{ bulk_disks }}"
    special:
      - type: mirror
        disks: [/dev/disk/by-id/nvme-META_A, /dev/disk/by-id/nvme-META_B]

- name: Export a pool before moving its disks
  pvesan.storage.zfs_pool:
    name: tank
    state: exported

- name: Destroy a test pool
  pvesan.storage.zfs_pool:
    name: scratch
    state: absent
    allow_destroy: true
"""

RETURN = r"""
commands:
  description: The commands run (or, in check mode, that would run), in order.
  returned: always
  type: list
  elements: str
  sample: ["zpool create -o ashift=12 tank mirror /dev/disk/by-id/ata-DISK_A /dev/disk/by-id/ata-DISK_B"]
layout:
  description: The vdev layout after the run (predicted in check mode), as zpool reports the disks.
  returned: when the pool exists afterwards
  type: list
  elements: dict
  contains:
    class:
      description: data, special, dedup, log, cache or spare.
      type: str
    type:
      description: disk, mirror, raidz1-3 or the full draid spec (draid2:4d:11c:1s).
      type: str
    disks:
      description: The devices of the vdev.
      type: list
      elements: str
    paths:
      description:
        - For vdevs the pool has, the devices as zpool keeps their paths (C(zpool status -P)),
          e.g. C(/dev/disk/by-id/...-part1) where RV(layout[].disks) has C(/dev/sdb1).
      type: list
      elements: str
      returned: for vdevs of the pool
"""

import shlex

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.pvesan.storage.plugins.module_utils._zfs_pool import (
    PoolError,
    Resolver,
    check_pool_name,
    layout_args,
    parse_get,
    parse_import_list,
    parse_status,
    plan,
    prop_value,
    property_changes,
    removal_conflicts,
    remove_command,
    render,
    wanted_layout,
)

VDEV_SPEC = dict(
    type=dict(type='str', default='stripe', choices=['stripe', 'mirror']),
    disks=dict(type='list', elements='str', required=True),
)
DATA_VDEV_SPEC = dict(
    type=dict(type='str', default='stripe',
              choices=['stripe', 'mirror', 'raidz1', 'raidz2', 'raidz3', 'draid1', 'draid2', 'draid3']),
    disks=dict(type='list', elements='str', required=True),
    draid_data=dict(type='int'),
    draid_spares=dict(type='int'),
    draid_children=dict(type='int'),
)


class Pool(object):
    """Runs zpool/zfs for one pool; in check mode mutating commands are only recorded."""

    def __init__(self, module):
        self.module = module
        self.name = module.params['name']
        self.bins = {'zpool': module.get_bin_path('zpool', required=True),
                     'zfs': module.get_bin_path('zfs', required=True)}
        self.commands = []

    def query(self, argv, check_rc=True):
        rc, out, err = self.module.run_command([self.bins[argv[0]]] + argv[1:])
        if check_rc and rc != 0:
            self.module.fail_json(msg='%s failed: %s' % (shlex.join(argv), (err or out).strip()),
                                  commands=self.commands)
        return rc, out

    def change(self, argv):
        self.commands.append(shlex.join(argv))
        if not self.module.check_mode:
            self.query(argv)

    def imported(self):
        return self.query(['zpool', 'list', '-H', '-o', 'name', self.name], check_rc=False)[0] == 0

    def importable(self):
        rc, out = self.query(['zpool', 'import'] + self.dir_args(), check_rc=False)
        return rc == 0 and self.name in parse_import_list(out)

    def dir_args(self):
        args = []
        for directory in self.module.params['import_dirs']:
            args += ['-d', directory]
        return args

    def layout(self):
        # -L resolves the links to the device nodes the disks are compared by; the paths zpool
        # keeps (without -L) are what zpool attach/remove accept to name an existing device.
        resolved = self.query(['zpool', 'status', '-P', '-L', self.name])[1]
        return parse_status(resolved, self.query(['zpool', 'status', '-P', self.name])[1])

    def get(self, tool, keys):
        if not keys:
            return {}
        return parse_get(self.query([tool, 'get', '-H', '-p', ','.join(sorted(keys)), self.name])[1])


def pool_properties(p):
    props = dict((k, prop_value(k, v)) for k, v in p['properties'].items())
    if p['ashift'] is not None:
        props['ashift'] = str(p['ashift'])
    if p['autotrim'] is not None:
        props['autotrim'] = prop_value('autotrim', p['autotrim'])
    return props


def create_command(p, layout):
    cmd = ['zpool', 'create'] + (['-f'] if p['force'] else [])
    for key, value in sorted(pool_properties(p).items()):
        cmd += ['-o', '%s=%s' % (key, value)]
    for key, value in sorted(p['filesystem_properties'].items()):
        cmd += ['-O', '%s=%s' % (key, prop_value(key, value))]
    return cmd + [p['name']] + layout_args(layout)


def describe(vdevs):
    return ', '.join('%s %s (%s)' % (v['class'], v.get('name') or v['type'], ' '.join(v['disks'])) for v in vdevs)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            state=dict(type='str', default='present', choices=['present', 'absent', 'exported', 'imported']),
            vdevs=dict(type='list', elements='dict', options=DATA_VDEV_SPEC),
            special=dict(type='list', elements='dict', options=VDEV_SPEC),
            dedup=dict(type='list', elements='dict', options=VDEV_SPEC),
            log=dict(type='list', elements='dict', options=VDEV_SPEC),
            cache=dict(type='list', elements='str'),
            spares=dict(type='list', elements='str'),
            ashift=dict(type='int'),
            autotrim=dict(type='bool'),
            properties=dict(type='dict', default={}),
            filesystem_properties=dict(type='dict', default={}),
            force=dict(type='bool', default=False),
            allow_destroy=dict(type='bool', default=False),
            import_dirs=dict(type='list', elements='path', default=[]),
        ),
        supports_check_mode=True,
    )
    # the C locale for every command: their output is parsed, translated messages would not match
    module.run_command_environ_update = dict(LANG='C', LC_ALL='C', LC_MESSAGES='C')
    p = module.params
    name, state = p['name'], p['state']
    try:
        check_pool_name(name)
        wanted = wanted_layout(p['vdevs'], p['special'], p['dedup'], p['log'], p['cache'], p['spares'])
    except PoolError as e:
        module.fail_json(msg=to_native(e))
    managed = set(cls for cls, opt in (('data', 'vdevs'), ('special', 'special'), ('dedup', 'dedup'),
                                       ('log', 'log'), ('cache', 'cache'), ('spare', 'spares'))
                  if p[opt] is not None)
    pool = Pool(module)
    result = dict(changed=False, commands=pool.commands)
    before_text, after_text = '', ''

    imported = pool.imported()
    created = False
    if state in ('absent', 'exported'):
        if imported:
            before_text = render(pool.layout())
            if state == 'absent':
                if not p['allow_destroy']:
                    module.fail_json(msg='state=absent would destroy pool %s and all its data (%s); set '
                                         'allow_destroy: true to do it' % (name, describe(pool.layout())), **result)
                pool.change(['zpool', 'destroy', name])
            else:
                pool.change(['zpool', 'export', name])
    elif not imported:
        if pool.importable():
            pool.change(['zpool', 'import'] + pool.dir_args() + [name])
            imported = not module.check_mode
        elif state == 'imported':
            module.fail_json(msg='pool %s is neither imported nor found by zpool import%s' % (
                name, ' in %s' % ', '.join(p['import_dirs']) if p['import_dirs'] else ''), **result)
        else:
            if not any(v['class'] == 'data' for v in wanted):
                module.fail_json(msg='pool %s does not exist: give vdevs to create it' % name, **result)
            pool.change(create_command(p, wanted))
            created = True
            after_text = render(wanted)
            result['layout'] = wanted

    if state == 'present' and imported:
        current = pool.layout()
        compared = [v for v in current if v['class'] in managed]
        resolver = Resolver()
        commands, removals, conflicts, after = plan(name, compared, wanted, resolver, p['force'], p['ashift'])
        after += [v for v in current if v['class'] not in managed]
        before_text = render(current)
        if conflicts or removals:
            blockers = conflicts + removal_conflicts(current, removals)
            if not p['allow_destroy']:
                what = list(conflicts)
                if removals:
                    what.append('vdevs not in the wanted layout would be removed: %s' % describe(removals))
                module.fail_json(msg='pool %s: the wanted layout needs destructive changes, nothing was changed. %s. '
                                     'Set allow_destroy: true to %s.' % (
                                         name, '; '.join(what),
                                         'destroy and re-create the pool (all data is lost)' if blockers
                                         else 'remove them'), **result)
            if blockers:
                # Only a new pool has this layout: destroy and create it again.
                keep = [v for v in current if v['class'] not in managed]
                new_layout = wanted + keep
                pool.change(['zpool', 'destroy', name])
                pool.change(create_command(p, new_layout))
                after, commands, created = new_layout, [], True
            else:
                for vdev in removals:
                    pool.change(remove_command(name, vdev))
                after = [v for v in after if v not in removals]
        for argv in commands:
            pool.change(argv)
        after_text = render(after)
        result['layout'] = after
        if not created:  # zpool create already set every property
            props = pool_properties(p)
            current_props = pool.get('zpool', props)
            for key, value in sorted(property_changes(props, current_props).items()):
                before_text += 'property %s=%s\n' % (key, current_props.get(key, ''))
                after_text += 'property %s=%s\n' % (key, value)
                pool.change(['zpool', 'set', '%s=%s' % (key, value), name])
            fs_props = p['filesystem_properties']
            current_fs = pool.get('zfs', fs_props)
            for key, value in sorted(property_changes(fs_props, current_fs).items()):
                before_text += 'filesystem %s=%s\n' % (key, current_fs.get(key, ''))
                after_text += 'filesystem %s=%s\n' % (key, value)
                pool.change(['zfs', 'set', '%s=%s' % (key, value), name])

    result['changed'] = bool(pool.commands)
    if module._diff and result['changed']:
        result['diff'] = dict(before_header='%s (layout)' % name, after_header='%s (layout)' % name,
                              before=before_text, after=after_text)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
