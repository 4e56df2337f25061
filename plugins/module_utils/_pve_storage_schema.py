# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Schema of every storage type Proxmox VE 9.1 keeps in /etc/pve/storage.cfg.

Written from pve-storage 9.1.7 (src/PVE/Storage/*Plugin.pm: properties(), options(),
plugindata()) and pve-common 9.2.1 (PVE/JSONSchema.pm formats), and held to what that code
itself reports: tests/unit/plugins/module_utils/test_pve_storage_facts.py compares every type,
option, content list, format and property kind here with the facts the real code dumped
(fixtures/proxmox/pve-9.1.json, scripts/proxmox-check.sh), and every validator with how the real
SectionConfig parser treated 80 storage.cfg texts. PVE 8.4 (pve-storage 8.3.8) differs only as
PVE8_DIFFERENCES says. Proxmox keeps ONE property namespace for all plugins
(PVE::SectionConfig::init dies on "duplicate property"), so PROPERTIES is a single table; TYPES
lists per storage type which of them it accepts and how:

    'rf' required + fixed (``{ fixed => 1 }``)   'r' required (``{}``)
    'o'  optional (``{ optional => 1 }``)          'of' optional + fixed

Fixed properties can only be set when a storage is created.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

# PVE::JSONSchema::parse_storage_id (note the /i: upper case is accepted).
STORAGE_ID_RE = re.compile(r'^[a-z][a-z0-9\-_.]*[a-z0-9]$', re.IGNORECASE)
# PVE::JSONSchema::pve_verify_node_name
NODE_NAME_RE = re.compile(r'^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$')
# PVE::Storage::Plugin::parse_lvm_name (format pve-storage-vgname)
LVM_NAME_RE = re.compile(r'^[a-z0-9][a-z0-9\-_.]*[a-z0-9]$', re.IGNORECASE)
# PVE::JSONSchema::pve_verify_configid
CONFIGID_RE = re.compile(r'^[a-z][a-z0-9_]+$', re.IGNORECASE)
_DNS_LABEL = r'[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?'
DNS_NAME_RE = re.compile(r'^(%s\.)*%s$' % (_DNS_LABEL, _DNS_LABEL))
FINGERPRINT_RE = re.compile(r'^([A-Fa-f0-9]{2}:){31}[A-Fa-f0-9]{2}$')
ZFS_BLOCKSIZE_RE = re.compile(r'^([1-9][0-9]*)([km])?$', re.IGNORECASE)
INTEGER_RE = re.compile(r'^[+-]?\d+$')


class SchemaError(ValueError):
    """A value or a section that Proxmox would reject; the message names the rule."""


def _ip_ok(host):
    try:
        ipaddress.ip_address(u'%s' % host)
        return True
    except ValueError:
        return False


def _host_ok(host, brackets=True):
    """An IP address or a DNS name; an IPv6 address in brackets only where PVE allows it."""
    if brackets and host.startswith('[') and host.endswith(']'):
        return ':' in host and _ip_ok(host[1:-1])
    return _ip_ok(host) or bool(DNS_NAME_RE.match(host))


def check_path(value):
    # PVE::Storage::Plugin::verify_path
    if not re.match(r'^/[^;()]+', value):
        raise SchemaError('must be an absolute path without ";", "(" or ")"')


def check_server(value):
    # PVE::Storage::Plugin::verify_server: pve_verify_ip or pve_verify_dns_name, no brackets
    if not _host_ok(value, brackets=False):
        raise SchemaError('must be an IP address (IPv6 without brackets) or a DNS name')


def check_portal(value):
    # host or [ipv6] or ipv4, optional :port (PVE::Tools::parse_host_and_port)
    m = re.match(r'^(\[[^\]]+\]|[^:\[\]]+|[0-9a-fA-F:]+)(:(\d+))?$', value)
    if not m or not _host_ok(m.group(1)) or (m.group(3) and not 0 < int(m.group(3)) < 65536):
        raise SchemaError('must be HOST or HOST:PORT (IP address or DNS name)')


def check_portal_list(value):
    for item in re.split(r'[;,\s]+', value.strip()):
        check_portal(item)


def check_vgname(value):
    if not LVM_NAME_RE.match(value):
        raise SchemaError('LVM name contains illegal characters (allowed: a-z 0-9 - _ ., '
                          'starting and ending with a letter or digit)')


def check_volume_id(value):
    if not re.match(r'^[a-z][a-z0-9\-_.]*[a-z0-9]:.+$', value, re.IGNORECASE):
        raise SchemaError("must be a volume ID '<storage>:<volume>'")


def check_configid(value):
    if not CONFIGID_RE.match(value):
        raise SchemaError('must start with a letter and contain only letters, digits and "_"')


def check_mount_options(value):
    if not re.match(r'^\S+$', value):
        raise SchemaError('mount options must not contain white space (use "a,b,c")')


def check_fingerprint(value):
    if not FINGERPRINT_RE.match(value):
        raise SchemaError('must be a SHA-256 fingerprint: 32 hex byte pairs separated by ":"')


def check_zfs_blocksize(value):
    # PVE::Storage::ZFSPoolPlugin::verify_zfs_blocksize
    m = ZFS_BLOCKSIZE_RE.match(value)
    if m:
        num = int(m.group(1)) * {'': 1, 'k': 1024, 'm': 1024 * 1024}[(m.group(2) or '').lower()]
        if 512 <= num <= 16 * 1024 * 1024 and num & (num - 1) == 0:
            return
    raise SchemaError('must be a power of 2 between 512 and 16M, e.g. 8k, 16k, 1m')


# PVE::JSONSchema's values of a boolean in a property string, and its number check
PVE_TRUE = ('1', 'true', 'yes', 'on')
PVE_FALSE = ('0', 'false', 'no', 'off')
NUMBER_RE = re.compile(r'^[+-]?(\d+|\d+\.\d*|\d*\.\d+)([eE][+-]?\d+)?$')


def _property_string(keys, value):
    """'k1=v1,k2=v2' -> dict; keys must be known and given once (PVE::JSONSchema::parse_property_string)."""
    out = {}
    for item in value.split(','):
        key, sep, val = item.partition('=')
        if not sep or key not in keys or key in out:
            raise SchemaError("must be a list of key=value with keys %s, each once" % ', '.join(sorted(keys)))
        out[key] = val
    return out


def check_prune_backups(value):
    # PVE::Storage::Plugin $prune_backups_format and validate_prune_backups
    keys = ('keep-all', 'keep-last', 'keep-hourly', 'keep-daily', 'keep-weekly', 'keep-monthly', 'keep-yearly')
    items = _property_string(keys, value)
    for key, val in items.items():
        if key == 'keep-all':
            if val.lower() not in PVE_TRUE + PVE_FALSE:
                raise SchemaError("keep-all must be a boolean (1/0, yes/no, true/false, on/off)")
        elif not re.match(r'^\+?\d+$', val):
            raise SchemaError("%s must be an integer >= 0" % key)
    if items.get('keep-all', '0').lower() in PVE_TRUE and any(int(v) > 0 for k, v in items.items() if k != 'keep-all'):
        raise SchemaError("keep-all cannot be set together with other options (Proxmox drops the property)")


def check_bwlimit(value):
    # pve-common $bwlimit_format: numbers >= 0 in KiB/s, fractions allowed
    for key, val in _property_string(('clone', 'default', 'migration', 'move', 'restore'), value).items():
        if not NUMBER_RE.match(val) or float(val) < 0:
            raise SchemaError("%s must be a number >= 0 (KiB/s)" % key)


def check_content_dirs(value, content=None):
    """PVE::Storage::Plugin::verify_dir_override per entry; ``content``: the type's content types."""
    valid = set(_FILE_CONTENT + ('none',))
    for item in value.split(','):
        m = re.match(r'^([a-z]+)=([^.]*(?:\.?[^.]+)+)$', item)
        if not m or m.group(1) not in valid:
            raise SchemaError("must be a list of <content>=<relative path> (no '..', a content type of "
                              "Proxmox: %s)" % ', '.join(sorted(valid)))
        if len(m.group(2)) >= 1023 or any(len(part) >= 255 for part in m.group(2).split('/')):
            raise SchemaError("path of '%s' is too long (Proxmox: under 1023, each part under 255)" % m.group(1))
        if content is not None and m.group(1) not in content:
            raise SchemaError("'%s' is no content type of this storage type (Proxmox drops that entry)" % m.group(1))


def check_url(value):
    if not re.match(r'^https?://[^\s/]+(/\S*)?$', value):
        raise SchemaError('must be an http:// or https:// URL')


class Prop:
    """One storage.cfg property: kind is boolean, integer, string, enum, set or list.

    ``set`` is an unordered comma list (content, nodes: Proxmox keeps them in a hash);
    ``list`` is an ordered comma list (PVE ``string-list``).
    """

    __slots__ = ('name', 'kind', 'check', 'choices', 'minimum', 'maximum', 'max_length', 'owner', 'doc')

    def __init__(self, name, kind='string', check=None, choices=None, minimum=None, maximum=None,
                 max_length=None, owner='pve', doc=''):
        self.name = name
        self.kind = kind
        self.check = check
        self.choices = choices
        self.minimum = minimum
        self.maximum = maximum
        self.max_length = max_length
        self.owner = owner
        self.doc = doc


_FILE_CONTENT = ('images', 'rootdir', 'vztmpl', 'iso', 'backup', 'snippets', 'import')

_PROPS = [
    # common, PVE::Storage::Plugin $defaultData->{propertyList}
    Prop('nodes', 'set', doc='Nodes on which the storage is usable.'),
    Prop('content', 'set', doc='Allowed content types.'),
    Prop('disable', 'boolean', doc='Disable the storage.'),
    Prop('shared', 'boolean', doc='Same contents on all nodes.'),
    Prop('prune-backups', check=check_prune_backups, doc='Backup retention.'),
    Prop('max-protected-backups', 'integer', minimum=-1),
    Prop('subdir', check=check_path),
    Prop('format', 'enum', choices=('raw', 'qcow2', 'vmdk', 'subvol')),
    Prop('preallocation', 'enum', choices=('off', 'metadata', 'falloc', 'full')),
    Prop('content-dirs', check=check_content_dirs),
    Prop('options', check=check_mount_options),
    Prop('port', 'integer', minimum=1, maximum=65535),
    Prop('bwlimit', check=check_bwlimit),
    Prop('snapshot-as-volume-chain', 'boolean', doc='Snapshots as qcow2 volume chains (PVE 9).'),
    Prop('path', check=check_path),
    Prop('server', check=check_server),
    Prop('username'),
    Prop('password', max_length=256),
    Prop('pool'),
    Prop('portal', check=check_portal),
    Prop('target'),
    Prop('namespace'),
    Prop('monhost', check=check_portal_list),
    Prop('keyring'),
    # dir / btrfs
    Prop('mkdir', 'boolean'),
    Prop('create-base-path', 'boolean'),
    Prop('create-subdirs', 'boolean'),
    Prop('is_mountpoint'),
    Prop('nocow', 'boolean'),
    # nfs
    Prop('export', check=check_path),
    # cifs
    Prop('share'),
    Prop('domain', max_length=256),
    Prop('smbversion', 'enum', choices=('default', '2.0', '2.1', '3', '3.0', '3.11')),
    # pbs
    Prop('datastore'),
    Prop('fingerprint', check=check_fingerprint),
    Prop('encryption-key'),
    Prop('master-pubkey'),
    # zfspool / zfs
    Prop('blocksize', check=check_zfs_blocksize),
    Prop('sparse', 'boolean'),
    Prop('mountpoint', check=check_path),
    # ZFSPlugin.pm: a plain string in Proxmox, but the plugin dies on anything but these
    Prop('iscsiprovider', 'enum', choices=('comstar', 'istgt', 'iet', 'LIO')),
    Prop('nowritecache', 'boolean'),
    Prop('comstar_tg'),
    Prop('comstar_hg'),
    Prop('lio_tpg'),
    Prop('zfs-base-path', check=check_path),
    # lvm / lvmthin
    Prop('vgname', check=check_vgname),
    Prop('base', check=check_volume_id),
    Prop('saferemove', 'boolean'),
    Prop('saferemove_throughput'),
    Prop('saferemove-stepsize', 'enum', choices=('1', '2', '4', '8', '16', '32')),
    Prop('tagged_only', 'boolean'),
    Prop('thinpool', check=check_vgname),
    # rbd / cephfs
    Prop('data-pool'),
    Prop('krbd', 'boolean'),
    Prop('fuse', 'boolean'),
    Prop('fs-name', check=check_configid),
    # esxi
    Prop('skip-cert-verification', 'boolean'),
    # pvesan: the driver options of the driver guide; none of these names exists in any
    # built-in plugin (tests/unit/.../test_pve_storage_schema.py checks that).
    Prop('api_url', check=check_url, owner='pvesan', doc='URL of the pvesan-service API.'),
    Prop('auth_token', owner='pvesan', doc='API token (secret, kept in priv/storage/<id>.pw).'),
    Prop('ssl_verify_peer', 'boolean', owner='pvesan', doc='Verify the API server certificate.'),
    Prop('service_type', owner='pvesan', doc='Provisioning template (service class).'),
    Prop('query_include', 'list', owner='pvesan', doc='Tags a volume pool must have.'),
    Prop('query_exclude', 'list', owner='pvesan', doc='Tags a volume pool must not have.'),
    Prop('transport_encryption', 'enum', choices=('tls', 'ipsec', 'none'), owner='pvesan',
         doc='Data path encryption.'),
    Prop('multipath', 'boolean', owner='pvesan', doc='Log in to every portal and use dm-multipath.'),
]
PROPERTIES = dict((p.name, p) for p in _PROPS)


class SecretDef:
    """Where Proxmox keeps a secret: a file under <config_root>/priv, never storage.cfg."""

    __slots__ = ('option', 'prop', 'path', 'template')

    def __init__(self, option, prop, path, template):
        self.option = option        # module option name
        self.prop = prop            # Proxmox property / API parameter name
        self.path = path            # relative to config_root, '{id}' replaced
        self.template = template    # file content, '{value}' replaced


class TypeDef:
    __slots__ = ('name', 'options', 'content', 'default_content', 'formats', 'shared', 'secrets',
                 'custom', 'path_default')

    def __init__(self, name, options, content, default_content, formats=(), shared=False, secrets=(),
                 custom=False, path_default=False):
        self.name = name
        self.options = options
        self.content = frozenset(content)
        self.default_content = tuple(default_content)
        self.formats = frozenset(formats)
        self.shared = shared                # always shared (PVE::Storage::Plugin::@SHARED_STORAGE)
        self.secrets = dict((s.option, s) for s in secrets)
        self.custom = custom                # needs a plugin outside pve-storage
        self.path_default = path_default    # check_config: path = /mnt/pve/<id> on create

    def required(self):
        return sorted(k for k, v in self.options.items() if 'r' in v)

    def fixed(self):
        return sorted(k for k, v in self.options.items() if 'f' in v)


def _opts(spec):
    """'path:rf nodes:o ...' -> {'path': 'rf', 'nodes': 'o', ...}"""
    return dict(item.split(':') for item in spec.split())


_BACKUP_OPTS = 'prune-backups:o max-protected-backups:o'
_MKDIR_OPTS = 'mkdir:o create-base-path:o create-subdirs:o'

_PW = 'priv/storage/{id}.pw'

TYPES = dict((t.name, t) for t in [
    TypeDef('dir', _opts('path:rf content-dirs:o nodes:o shared:o disable:o content:o format:o is_mountpoint:o '
                         'bwlimit:o preallocation:o snapshot-as-volume-chain:of %s %s' % (_BACKUP_OPTS, _MKDIR_OPTS)),
            _FILE_CONTENT + ('none',), ('images', 'rootdir'), ('raw', 'qcow2', 'vmdk', 'subvol')),
    TypeDef('nfs', _opts('path:rf content-dirs:o server:rf export:rf nodes:o disable:o options:o content:o '
                         'format:o bwlimit:o preallocation:o snapshot-as-volume-chain:of %s %s'
                         % (_BACKUP_OPTS, _MKDIR_OPTS)),
            _FILE_CONTENT, ('images',), ('raw', 'qcow2', 'vmdk'), shared=True, path_default=True),
    TypeDef('cifs', _opts('path:rf content-dirs:o server:rf share:rf subdir:o nodes:o disable:o content:o '
                          'format:o username:o password:o domain:o smbversion:o bwlimit:o preallocation:o '
                          'options:o snapshot-as-volume-chain:of %s %s' % (_BACKUP_OPTS, _MKDIR_OPTS)),
            _FILE_CONTENT, ('images',), ('raw', 'qcow2', 'vmdk'), shared=True, path_default=True,
            secrets=[SecretDef('password', 'password', _PW, 'password={value}\n')]),
    TypeDef('pbs', _opts('server:rf datastore:rf namespace:o port:o nodes:o disable:o content:o username:o '
                         'password:o encryption-key:o master-pubkey:o prune-backups:o '
                         'max-protected-backups:o fingerprint:o'),
            ('backup', 'none'), ('backup',), shared=True,
            secrets=[SecretDef('password', 'password', _PW, '{value}\n'),
                     SecretDef('encryption_key', 'encryption-key', 'priv/storage/{id}.enc', '{value}\n'),
                     # PBSPlugin::on_add_hook: the decoded PEM in <id>.master.pem, `master-pubkey 1`
                     SecretDef('master_pubkey', 'master-pubkey', 'priv/storage/{id}.master.pem', '{value}\n')]),
    TypeDef('zfspool', _opts('pool:rf blocksize:o sparse:o nodes:o disable:o content:o bwlimit:o mountpoint:o'),
            ('images', 'rootdir'), ('images', 'rootdir'), ('raw', 'subvol')),
    TypeDef('lvm', _opts('vgname:rf nodes:o shared:o disable:o saferemove:o saferemove_throughput:o content:o '
                         'base:of tagged_only:o bwlimit:o saferemove-stepsize:o snapshot-as-volume-chain:o'),
            ('images', 'rootdir'), ('images',), ('raw', 'qcow2')),
    TypeDef('lvmthin', _opts('thinpool:rf vgname:rf nodes:o disable:o content:o bwlimit:o'),
            ('images', 'rootdir'), ('images', 'rootdir')),
    TypeDef('iscsi', _opts('portal:rf target:rf nodes:o disable:o content:o bwlimit:o'),
            ('images', 'none'), ('images',), shared=True),
    TypeDef('iscsidirect', _opts('portal:rf target:rf nodes:o disable:o content:o bwlimit:o'),
            ('images', 'none'), ('images',), shared=True),
    TypeDef('rbd', _opts('nodes:o disable:o monhost:o pool:o data-pool:o namespace:o username:o content:o '
                         'krbd:o keyring:o bwlimit:o'),
            ('images', 'rootdir'), ('images',), shared=True,
            secrets=[SecretDef('keyring', 'keyring', 'priv/ceph/{id}.keyring', '{value}\n')]),
    TypeDef('cephfs', _opts('path:rf content-dirs:o monhost:o nodes:o subdir:o disable:o options:o username:o '
                            'content:o format:o fuse:o bwlimit:o keyring:o fs-name:o %s %s'
                            % (_BACKUP_OPTS, _MKDIR_OPTS)),
            ('vztmpl', 'iso', 'backup', 'snippets', 'import'), ('backup',), (),
            shared=True, path_default=True,
            # PVE::CephConfig::ceph_create_keyfile: cephfs keeps the bare secret in <id>.secret
            secrets=[SecretDef('keyring', 'keyring', 'priv/ceph/{id}.secret', '{value}\n')]),
    TypeDef('btrfs', _opts('path:rf nodes:o shared:o disable:o content:o format:o is_mountpoint:o nocow:o '
                           'preallocation:o %s %s' % (_BACKUP_OPTS, _MKDIR_OPTS)),
            _FILE_CONTENT + ('none',), ('images', 'rootdir'), ('raw', 'subvol')),
    TypeDef('zfs', _opts('nodes:o disable:o portal:rf target:rf pool:rf blocksize:rf iscsiprovider:rf '
                         'nowritecache:o sparse:o comstar_hg:o comstar_tg:o lio_tpg:o content:o bwlimit:o '
                         'zfs-base-path:o'),
            ('images',), ('images',), shared=True),
    TypeDef('esxi', _opts('nodes:o shared:o disable:o content:o server:r username:r password:o '
                          'skip-cert-verification:o port:o'),
            ('import',), ('import',), ('raw', 'qcow2', 'vmdk'),
            secrets=[SecretDef('password', 'password', _PW, '{value}')]),
    # Our plugin (PVE::Storage::Custom::PVESANPlugin, roles/pve_host/files/PVESANPlugin.pm: the one
    # declaration of the type; test_pve_storage_facts.py compares this entry with what the plugin's
    # properties(), options() and plugindata() return). The plugin joins @SHARED_STORAGE, so
    # Proxmox marks it shared and overrides `shared 0`.
    TypeDef('pvesan', _opts('api_url:rf auth_token:o ssl_verify_peer:o service_type:o query_include:o '
                            'query_exclude:o transport_encryption:o multipath:o nodes:o shared:o disable:o '
                            'content:o bwlimit:o'),
            ('images', 'rootdir', 'none'), ('images',), ('raw',), shared=True, custom=True,
            secrets=[SecretDef('auth_token', 'auth_token', _PW, '{value}\n')]),
])

# Properties that hold secrets (or keys), given only through the module's own options: never shown,
# never written to storage.cfg by us. storage.cfg keeps a marker for two of them (the key's
# fingerprint, `master-pubkey 1`), as Proxmox does.
SECRET_PROPS = frozenset(s.prop for t in TYPES.values() for s in t.secrets.values())
MARKER_PROPS = frozenset(('encryption-key', 'master-pubkey'))

# How Proxmox VE 8.4 (pve-storage 8.3.8, APIVER 11) differs from this schema; test_pve_storage_facts.py
# checks this against the two releases' facts.
PVE8_DIFFERENCES = {
    'types only in 8.4': ['glusterfs'],
    'properties only in 8.4': ['maxfiles', 'server2', 'transport', 'volume'],
    'properties only in 9.1': ['saferemove-stepsize', 'snapshot-as-volume-chain'],
    'options only in 8.4': {'maxfiles': ['btrfs', 'cephfs', 'cifs', 'dir', 'nfs', 'pbs']},
    'options only in 9.1': {'saferemove-stepsize': ['lvm'], 'snapshot-as-volume-chain': ['cifs', 'dir', 'lvm', 'nfs']},
    'formats': {'lvm': 'none in 8.4; raw (default) and qcow2 in 9.1'},
}

# Removed from Proxmox VE 9: said when they are asked for.
REMOVED_IN_PVE9 = {
    'glusterfs': "Proxmox VE 9 has no glusterfs storage type (it drops such sections on its next write: "
                 "'unsupported type'); mount the volume and use a dir storage, or stay on PVE 8",
    'maxfiles': "Proxmox VE 9 removed 'maxfiles' (it drops the property); use prune-backups keep-last=N",
}


def check_storage_id(sid):
    if not isinstance(sid, str) or not STORAGE_ID_RE.match(sid):
        raise SchemaError("storage ID %r is invalid: Proxmox requires 2+ characters, a letter first, "
                          "a letter or digit last and only letters, digits, '-', '_' and '.' "
                          "(PVE::JSONSchema::parse_storage_id)" % (sid,))


def decode_value(stype, key, text):
    """storage.cfg text -> Python value, checked like PVE::SectionConfig::check_value.

    ``text`` is None for a bare key (only booleans may be bare).
    """
    prop = PROPERTIES[key]
    if prop.kind == 'boolean':
        if text is None:
            return True
        if text not in ('0', '1'):
            raise SchemaError("boolean property '%s' must be 0, 1 or a bare key, got %r "
                              "(Proxmox rejects yes/true/on)" % (key, text))
        return text == '1'
    if text is None:
        raise SchemaError("property '%s' needs a value" % key)
    if prop.kind == 'integer':
        if not INTEGER_RE.match(text):
            raise SchemaError("property '%s' must be an integer, got %r" % (key, text))
        value = int(text)
        _check_range(prop, value)
        return value
    if prop.kind in ('set', 'list'):
        items = [i for i in re.split(r'[;,\s]+', text) if i]
        return check_list(stype, key, items)
    return check_string(stype, key, text)


def _check_range(prop, value):
    if prop.minimum is not None and value < prop.minimum:
        raise SchemaError("property '%s' must be >= %d, got %d" % (prop.name, prop.minimum, value))
    if prop.maximum is not None and value > prop.maximum:
        raise SchemaError("property '%s' must be <= %d, got %d" % (prop.name, prop.maximum, value))


def check_string(stype, key, value):
    prop = PROPERTIES[key]
    if '\n' in value or '\r' in value:
        raise SchemaError("property '%s' contains a line feed" % key)
    if value != value.strip() or value == '':
        raise SchemaError("property '%s' must not be empty or start/end with white space" % key)
    if prop.max_length and len(value) > prop.max_length:
        raise SchemaError("property '%s' is longer than %d characters" % (key, prop.max_length))
    if prop.kind == 'enum' and value not in prop.choices:
        hint = ''
        if value.lower() in [c.lower() for c in prop.choices]:
            hint = ' (values are case sensitive)'
        raise SchemaError("property '%s' must be one of %s, got %r%s" % (key, ', '.join(prop.choices), value, hint))
    if key == 'format':
        formats = TYPES[stype].formats if stype in TYPES else ()
        if value not in formats:
            raise SchemaError("storage type '%s' does not support format %r (supported: %s)"
                              % (stype, value, ', '.join(sorted(formats)) or 'none'))
    if prop.check:
        try:
            if key == 'content-dirs':
                prop.check(value, TYPES[stype].content if stype in TYPES else None)
            else:
                prop.check(value)
        except SchemaError as e:
            raise SchemaError("property '%s' %s, got %r" % (key, e, value))
    if key == 'path' and stype in ('dir', 'btrfs') and not re.match(r'^/[-/a-zA-Z0-9_.@]+$', value):
        # DirPlugin::check_config, applied on every parse
        raise SchemaError("illegal path for %s storage: %r (allowed: / a-z A-Z 0-9 - _ . @)" % (stype, value))
    return value


def check_list(stype, key, items):
    items = [str(i) for i in items]
    if key == 'content':
        tdef = TYPES[stype]
        bad = [i for i in items if i not in tdef.content]
        if bad:
            raise SchemaError("storage type '%s' does not support content type %s (supported: %s)"
                              % (stype, ', '.join(repr(b) for b in bad), ', '.join(sorted(tdef.content))))
        if 'none' in items and len(set(items)) > 1:
            raise SchemaError("content 'none' cannot be combined with other content types")
        if not items:
            if 'none' not in tdef.content:
                raise SchemaError("storage type '%s' does not support an empty content list" % stype)
            items = ['none']
    elif key == 'nodes':
        bad = [i for i in items if not NODE_NAME_RE.match(i)]
        if bad:
            raise SchemaError("nodes: %s is not a valid node name" % ', '.join(repr(b) for b in bad))
    else:
        bad = [i for i in items if not i or re.search(r'[,;\s]', i)]
        if bad:
            raise SchemaError("property '%s': list items must not contain ',', ';' or white space" % key)
    if PROPERTIES[key].kind == 'set':
        return sorted(set(items))
    return items


def encode_value(key, value):
    """Python value -> storage.cfg text (PVE::Storage::Plugin::encode_value + format_config_line)."""
    prop = PROPERTIES.get(key)
    if prop is None:
        return value  # unknown property kept verbatim
    if prop.kind == 'boolean':
        return '1' if value else '0'
    if prop.kind in ('set', 'list'):
        return ','.join(value)
    if key == 'content-dirs':
        return ','.join(sorted(value.split(',')))  # PVE::Storage::Plugin::dirs_hash_to_string: sorted
    return str(value)
