# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ZFS pool layouts: parse ``zpool status -P -L``, compare with a wanted layout, plan commands.

A layout is a list of vdev dicts ``{"class", "type", "disks", "name"}``:
class is data|special|dedup|log|cache|spare, type is disk (a single-disk top-level vdev),
mirror, raidz1-3 or draidN:<d>d:<c>c:<s>s. Disks are compared after resolving symlinks
(/dev/disk/by-id, by-path, ...) to the device node, and a whole disk matches the partition 1
ZFS made on it, which is what ``zpool status -P -L`` reports. That is what keeps a second
run unchanged whatever way the disks were named (community.general zpool #10744, #10771).

Standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

CLASSES = ('data', 'special', 'dedup', 'log', 'cache', 'spare')
# Headers of the class sections in `zpool status` and the keyword that adds to each class.
STATUS_CLASS = {'special': 'special', 'dedup': 'dedup', 'logs': 'log', 'cache': 'cache', 'spares': 'spare'}
ADD_KEYWORD = {'special': 'special', 'dedup': 'dedup', 'log': 'log', 'cache': 'cache', 'spare': 'spare'}
TYPES = ('stripe', 'mirror', 'raidz1', 'raidz2', 'raidz3', 'draid1', 'draid2', 'draid3')
DEVICE_DIRS = ('/dev', '/dev/disk/by-id', '/dev/disk/by-path', '/dev/disk/by-vdev', '/dev/disk/by-partuuid',
               '/dev/disk/by-partlabel')
POOL_NAME = re.compile(r'^[A-Za-z][A-Za-z0-9_.: -]*$')
RESERVED_PREFIXES = ('mirror', 'raidz', 'draid', 'spare')
SIZE_PROPERTIES = ('recordsize', 'quota', 'refquota', 'reservation', 'refreservation', 'special_small_blocks',
                   'volsize', 'volblocksize')
_SIZE = re.compile(r'^([0-9]+(?:\.[0-9]+)?)\s*([KMGTPE]?)(?:i?B)?$', re.I)


class PoolError(Exception):
    """An invalid request or an unsafe change; the message says what to do."""


def check_pool_name(name):
    """The pool-name rules of the Proxmox admin guide (3.8.6) and zpool itself."""
    if not POOL_NAME.match(name or ''):
        raise PoolError('invalid pool name %r: begin with a letter and use only letters, digits, '
                        '"-", "_", ".", ":" or space' % name)
    if name == 'log' or name.lower().startswith(RESERVED_PREFIXES):
        raise PoolError('invalid pool name %r: must not be "log" or begin with mirror, raidz, draid or spare' % name)


# --- disk names --------------------------------------------------------------------------
class Resolver(object):
    """Resolve a disk as the user names it to the device node zpool reports.

    links maps symlink paths to their targets for tests that replay a recorded
    ``ls -l /dev/disk/by-id``; on a host the real file system is used. sysfs is the
    /sys/class/block tree used to find the partitions of a device.
    """

    def __init__(self, links=None, sysfs='/sys/class/block'):
        self.links = links
        self.sysfs = sysfs

    def exists(self, path):
        if self.links is not None:
            return path in self.links or path in self.links.values()
        return os.path.exists(path)

    def realpath(self, path):
        if self.links is not None:
            seen = 0
            while path in self.links and seen < 20:
                target = self.links[path]
                path = os.path.normpath(os.path.join(os.path.dirname(path), target))
                seen += 1
            return path
        return os.path.realpath(path)

    def resolve(self, disk):
        """Full device path: short names are looked up the way zpool does (/dev, by-id, ...)."""
        if not disk.startswith('/'):
            for directory in DEVICE_DIRS:
                candidate = os.path.join(directory, disk)
                if self.exists(candidate):
                    disk = candidate
                    break
            else:
                disk = os.path.join('/dev', disk)
        return self.realpath(disk)

    def partitions(self, device):
        """Device nodes of the partitions of device, from sysfs. A partition of a dm device
        (a multipath map partitioned by kpartx) is another dm device, listed as its holder."""
        name = os.path.basename(device)
        base = os.path.join(self.sysfs, name)
        found = set()
        if not device.startswith('/dev/') or not os.path.isdir(base):
            return found
        for entry in os.listdir(base):
            if entry.startswith(name) and os.path.exists(os.path.join(base, entry, 'partition')):
                found.add('/dev/' + entry)
        holders = os.path.join(base, 'holders')
        if name.startswith('dm-') and os.path.isdir(holders):
            found.update('/dev/' + holder for holder in os.listdir(holders))
        return found

    def same_disk(self, wanted_real, reported):
        """True when zpool's reported device is the wanted device or the partition ZFS made on it.
        A reported name without a path (`zpool status` without -P prints the last component,
        e.g. a by-id name) is looked up the way a wanted short name is."""
        if not reported.startswith('/'):
            reported = self.resolve(reported)
        if reported in (wanted_real, partition_one(wanted_real)):
            return True
        return reported.startswith('/dev/') and reported in self.partitions(wanted_real)


def partition_one(device):
    """The first partition ZFS creates on a whole disk: sdb -> sdb1, nvme0n1 -> nvme0n1p1."""
    return device + ('p1' if device[-1:].isdigit() else '1')


# --- zpool status ------------------------------------------------------------------------
def vdev_type(name):
    """Type of a top-level vdev from its status name (mirror-0, raidz2-1, draid2:4d:11c:1s-0)."""
    match = re.match(r'^(mirror|raidz[123]?|draid[123]?(?::[0-9]+[dcs])*)-[0-9]+$', name)
    if not match:
        return 'disk'
    kind = match.group(1)
    if kind == 'raidz':
        return 'raidz1'
    if kind.startswith('draid') and not kind[5:6].isdigit():
        kind = 'draid1' + kind[5:]
    return kind


def _config_rows(text):
    """(depth, name) of each line of the config section of `zpool status`, the pool's own line
    and the class headers (depth 0) included; None when there is no config section."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().startswith('NAME') and 'STATE' in line)
    except StopIteration:
        return None
    # zpool prints the config indented by one tab; copies of it (terminals, pastes, `awk`) often
    # have spaces instead. Depth is counted from whatever margin the NAME header has.
    header = lines[start]
    margin = header[:len(header) - len(header.lstrip())]
    rows = []
    for line in lines[start + 2:]:  # skip the header and the pool's own line
        if not line.strip() or line.startswith('errors:'):
            break
        body = line[len(margin):] if line.startswith(margin) else line.lstrip('\t')
        rows.append(((len(body) - len(body.lstrip(' '))) // 2, body.split()[0]))
    return rows


def parse_status(text, paths_text=None):
    """Parse ``zpool status -P -L <pool>`` into a layout (list of vdev dicts).

    paths_text, the output of ``zpool status -P <pool>`` (without -L), gives each disk the path
    zpool keeps for it (``paths``, parallel to ``disks``). zpool only accepts that path (or the
    guid) to name an existing device in attach/remove: for a pool created with by-id links the
    resolved name -L prints is refused, "no such device in pool" (recorded, OpenZFS 2.1.11)."""
    rows = _config_rows(text)
    if rows is None:
        raise PoolError('unexpected zpool status output (no config section):\n%s' % text)
    path_rows = _config_rows(paths_text) if paths_text else None
    if not path_rows or [d for d, _n in path_rows] != [d for d, _n in rows]:
        path_rows = rows  # no paths (or another shape, e.g. the pool changed in between): use -L names
    layout = []
    cls = 'data'
    current = None
    spare_group = None  # [depth, leaves seen] of an active spare-N inside the current vdev
    for (depth, name), (_d, path) in zip(rows, path_rows):
        if spare_group and depth <= spare_group[0]:
            spare_group = None
        if depth == 0:
            cls = STATUS_CLASS.get(name, cls)
            current = None
            continue
        if depth == 1:
            kind = vdev_type(name)
            if cls == 'spare' and re.match(r'^draid[0-9]+-[0-9]+-[0-9]+$', name):
                continue  # a dRAID distributed spare: part of its draid vdev
            current = {'class': cls, 'type': kind, 'name': name, 'disks': [] if kind != 'disk' else [name],
                       'paths': [] if kind != 'disk' else [path]}
            layout.append(current)
        elif current is not None and current['type'] != 'disk':
            # Leaves of the vdev; replacing-N in the middle of a resilver is flattened. In an active
            # spare-N the first leaf is the member and the others are the hot spares standing in
            # for it (listed under spares as INUSE, or a dRAID distributed spare): not members.
            if re.match(r'^spare-[0-9]+$', name):
                spare_group = [depth, 0]
            elif re.match(r'^replacing-[0-9]+$', name):
                continue
            elif spare_group and depth == spare_group[0] + 1:
                spare_group[1] += 1
                if spare_group[1] == 1:
                    current['disks'].append(name)
                    current['paths'].append(path)
            else:
                current['disks'].append(name)
                current['paths'].append(path)
    return layout


def zpool_name(vdev, disk):
    """The name zpool accepts for a disk of a current vdev: its path as zpool keeps it."""
    paths = vdev.get('paths') or vdev['disks']
    return paths[vdev['disks'].index(disk)]


def parse_import_list(text):
    """Pool names `zpool import` (no arguments) offers for import."""
    return [m.group(1) for m in re.finditer(r'^\s*pool: (.+?)\s*$', text, re.M)]


def parse_get(text):
    """`zpool get -H -p` / `zfs get -H -p` output (name, property, value, source) to a dict."""
    props = {}
    for line in text.splitlines():
        fields = line.split('\t')
        if len(fields) >= 3:
            props[fields[1]] = fields[2]
    return props


# --- wanted layout -----------------------------------------------------------------------
def draid_spec(vdev):
    """Full draid type string, with OpenZFS's defaults filled in (children = disks given,
    data = min(8, children - parity - spares))."""
    parity = int(vdev['type'][5:])
    spares = vdev.get('draid_spares') or 0
    children = vdev.get('draid_children') or len(vdev['disks'])
    data = vdev.get('draid_data') or min(8, children - parity - spares)
    return 'draid%d:%dd:%dc:%ds' % (parity, data, children, spares)


def draid_arg(vdev):
    """The draid word as the user asked for it (only the parameters given)."""
    word = vdev['type']
    for key, suffix in (('draid_data', 'd'), ('draid_children', 'c'), ('draid_spares', 's')):
        if vdev.get(key):
            word += ':%d%s' % (vdev[key], suffix)
    return word


def wanted_layout(data=None, special=None, dedup=None, log=None, cache=None, spare=None):
    """Expand the module's options into a layout with the disks as the user named them."""
    layout = []
    groups = (('data', data), ('special', special), ('dedup', dedup), ('log', log))
    for cls, vdevs in groups:
        for vdev in vdevs or []:
            kind = vdev.get('type') or 'stripe'
            disks = list(vdev.get('disks') or [])
            if kind not in TYPES:
                raise PoolError('%s vdev type %r: use one of %s' % (cls, kind, ', '.join(TYPES)))
            if cls != 'data' and kind not in ('stripe', 'mirror'):
                raise PoolError('%s vdevs can only be stripe or mirror, not %s' % (cls, kind))
            if not disks:
                raise PoolError('a %s %s vdev needs disks' % (cls, kind))
            if kind == 'mirror' and len(disks) < 2:
                raise PoolError('a mirror needs at least 2 disks, got %s' % disks)
            if kind.startswith('raidz') and len(disks) < int(kind[5:]) + 1:
                raise PoolError('%s needs at least %d disks, got %d' % (kind, int(kind[5:]) + 1, len(disks)))
            if kind.startswith('draid'):
                spec = dict(vdev, disks=disks)
                parity = int(kind[5:])
                children = spec.get('draid_children') or len(disks)
                if children != len(disks):
                    raise PoolError('%s: draid_children=%d but %d disks given' % (kind, children, len(disks)))
                if children - parity - (spec.get('draid_spares') or 0) < 1:
                    raise PoolError('%s with %d disks and %d spares leaves no data disks'
                                    % (kind, len(disks), spec.get('draid_spares') or 0))
                layout.append({'class': cls, 'type': draid_spec(spec), 'arg': draid_arg(spec), 'disks': disks})
            elif kind == 'stripe':
                layout.extend({'class': cls, 'type': 'disk', 'disks': [d]} for d in disks)
            else:
                layout.append({'class': cls, 'type': kind, 'disks': disks})
    for cls, disks in (('cache', cache), ('spare', spare)):
        layout.extend({'class': cls, 'type': 'disk', 'disks': [d]} for d in disks or [])
    seen = {}
    for vdev in layout:
        for disk in vdev['disks']:
            if disk in seen:
                raise PoolError('disk %s is listed twice' % disk)
            seen[disk] = True
    return layout


def vdev_args(vdev):
    """The words one vdev contributes to a zpool create/add command."""
    if vdev['type'] == 'disk':
        return list(vdev['disks'])
    return [vdev.get('arg') or vdev['type']] + list(vdev['disks'])


def layout_args(layout):
    """Words for `zpool create`/`zpool add`: data vdevs first, then each class after its keyword.

    Within a class the single-disk vdevs come first: zpool reads every word after `mirror`
    (raidz, draid) up to the next keyword as a member, so `mirror a b c` is one 3-way mirror,
    never a mirror and a single disk (seen in the kernel VM: the module once made exactly that)."""
    words = []
    for cls in CLASSES:
        vdevs = [v for v in layout if v['class'] == cls]
        if not vdevs:
            continue
        if cls != 'data':
            words.append(ADD_KEYWORD[cls])
        for vdev in sorted(vdevs, key=lambda v: v['type'] != 'disk'):  # stable: order kept otherwise
            words.extend(vdev_args(vdev))
    return words


def render(layout):
    """Readable layout for diffs: one line per vdev."""
    out = []
    for cls in CLASSES:
        for vdev in layout:
            if vdev['class'] == cls:
                out.append('%-8s %-20s %s' % (cls, vdev['type'], ' '.join(vdev['disks'])))
    return '\n'.join(out) + ('\n' if out else '')


# --- comparison --------------------------------------------------------------------------
def _match_disks(resolver, wanted_disks, reported_disks):
    """True when the two disk lists name the same devices (any order)."""
    if len(wanted_disks) != len(reported_disks):
        return False
    left = list(reported_disks)
    for disk in wanted_disks:
        real = resolver.resolve(disk)
        hit = [r for r in left if resolver.same_disk(real, r)]
        if not hit:
            return False
        left.remove(hit[0])
    return True


def _owner(resolver, disk, current):
    real = resolver.resolve(disk)
    for vdev in current:
        for reported in vdev['disks']:
            if resolver.same_disk(real, reported):
                return vdev, reported
    return None, None


def plan(name, current, wanted, resolver, force=False, ashift=None):
    """Compare layouts; returns (commands, removals, conflicts, after_layout).

    commands: argv lists that grow the pool without losing data (zpool add / attach).
    removals: current vdevs the wanted layout no longer has (zpool remove needs allow_destroy).
    conflicts: reasons the layout can only be reached by destroying the pool.
    """
    commands, removals, conflicts = [], [], []
    matched = set()
    to_add = []
    after = [dict(v) for v in current]
    for want in wanted:
        hit = None
        for i, have in enumerate(current):
            if i in matched or have['class'] != want['class'] or have['type'] != want['type']:
                continue
            if _match_disks(resolver, want['disks'], have['disks']):
                hit = i
                break
        if hit is not None:
            matched.add(hit)
            continue
        owners = [(d,) + _owner(resolver, d, current) for d in want['disks']]
        used = [(d, vdev) for d, vdev, _r in owners if vdev is not None]
        if not used:
            to_add.append(want)
            continue
        # Growing a mirror (or turning a single disk into a mirror) is done in place by attach.
        holders = set(id(vdev) for _d, vdev in used)
        holder = used[0][1]
        idx = current.index(holder)
        if (want['type'] == 'mirror' and len(holders) == 1 and holder['class'] == want['class']
                and holder['type'] in ('disk', 'mirror') and len(used) == len(holder['disks'])
                and idx not in matched):
            matched.add(idx)
            anchor = zpool_name(holder, owners[[d for d, _v, _r in owners].index(used[0][0])][2])
            for disk, vdev, _r in owners:
                if vdev is None:
                    commands.append(['zpool', 'attach'] + (['-f'] if force else []) + [name, anchor, disk])
            new = [d for d, v, _r in owners if v is None]
            after[idx] = dict(holder, type='mirror', disks=holder['disks'] + new,
                              paths=list(holder.get('paths') or holder['disks']) + new)
            continue
        conflicts.append('%s %s %s uses disks that are already in the pool in another layout (%s)' % (
            want['class'], want['type'], ' '.join(want['disks']),
            ', '.join('%s in %s' % (d, v.get('name') or v['type']) for d, v in used)))
    for i, have in enumerate(current):
        if i not in matched:
            removals.append(have)
    if to_add:
        cmd = ['zpool', 'add'] + (['-f'] if force else [])
        if ashift:
            cmd += ['-o', 'ashift=%d' % ashift]
        commands.append(cmd + [name] + layout_args(to_add))
        after.extend(to_add)
    return commands, removals, conflicts, after


def removal_conflicts(current, removals):
    """Why `zpool remove` cannot take these vdevs out (empty when it can)."""
    reasons = []
    has_raidz = any(v['class'] == 'data' and v['type'].startswith(('raidz', 'draid')) for v in current)
    for vdev in removals:
        if vdev['class'] in ('log', 'cache', 'spare'):
            continue
        if vdev['type'].startswith(('raidz', 'draid')):
            reasons.append('%s %s cannot be removed from a pool' % (vdev['class'], vdev.get('name') or vdev['type']))
        elif has_raidz:
            reasons.append('%s %s cannot be removed: the pool has raidz/draid data vdevs'
                           % (vdev['class'], vdev.get('name') or vdev['type']))
    return reasons


def remove_command(name, vdev):
    """zpool remove of a top-level vdev: a single disk by the path zpool keeps, others by name."""
    target = zpool_name(vdev, vdev['disks'][0]) if vdev['type'] == 'disk' else vdev['name']
    return ['zpool', 'remove', name, target]


# --- properties --------------------------------------------------------------------------
def prop_value(key, value):
    """Normalise a property value for comparison and for the command line."""
    if isinstance(value, bool):
        return 'on' if value else 'off'
    value = str(value)
    if key in SIZE_PROPERTIES:
        match = _SIZE.match(value)
        if match:
            number, unit = match.groups()
            return str(int(float(number) * 1024 ** ' KMGTPE'.index(unit.upper() or ' ')))
    return value


def property_changes(wanted, current):
    """Properties whose current value differs, normalised: {key: value}."""
    changes = {}
    for key, value in (wanted or {}).items():
        value = prop_value(key, value)
        if current.get(key) != value:
            changes[key] = value
    return changes
