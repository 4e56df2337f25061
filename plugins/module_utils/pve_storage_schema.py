# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Schema of every storage type Proxmox VE keeps in /etc/pve/storage.cfg.

Transcribed from pve-storage (src/PVE/Storage/*Plugin.pm: properties(), options(),
plugindata()) and pve-common (PVE/JSONSchema.pm formats). Proxmox keeps ONE property
namespace for all plugins (PVE::SectionConfig::init dies on "duplicate property"), so
PROPERTIES is a single table; TYPES lists per storage type which of them it accepts and
how:

    'rf' required + fixed (``{ fixed => 1 }``)   'r' required (``{}``)
    'o'  optional (``{ optional => 1 }``)          'of' optional + fixed

Fixed properties can only be set when a storage is created.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

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
IPV4_RE = re.compile(r'^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$')
IPV6_RE = re.compile(r'^[0-9a-fA-F:.]*:[0-9a-fA-F:.]*$')
FINGERPRINT_RE = re.compile(r'^([A-Fa-f0-9]{2}:){31}[A-Fa-f0-9]{2}$')
ZFS_BLOCKSIZE_RE = re.compile(r'^([1-9][0-9]*)([km])?$', re.IGNORECASE)
INTEGER_RE = re.compile(r'^[+-]?\d+$')


class SchemaError(ValueError):
    """A value or a section that Proxmox would reject; the message names the rule."""


def _host_ok(host):
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    return bool(IPV4_RE.match(host) or IPV6_RE.match(host) or DNS_NAME_RE.match(host))


def check_path(value):
    # PVE::Storage::Plugin::verify_path
    if not re.match(r'^/[^;()]+', value):
        raise SchemaError('must be an absolute path without ";", "(" or ")"')


def check_server(value):
    if not _host_ok(value):
        raise SchemaError('must be an IP address or a DNS name')


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


def _property_string(keys, value_re=r'^\d+$'):
    """Validator for PVE property strings such as 'keep-last=3,keep-daily=7'."""
    def check(value):
        for item in value.split(','):
            key, sep, val = item.partition('=')
            if not sep or key not in keys or not re.match(value_re, val):
                raise SchemaError("must be a list of key=value with keys %s" % ', '.join(sorted(keys)))
    return check


def check_content_dirs(value):
    for item in value.split(','):
        key, sep, val = item.partition('=')
        if not sep or not re.match(r'^[a-z]+$', key) or not val or len(val) >= 1023:
            raise SchemaError("must be a list of <content>=<relative path>")


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


_PRUNE_KEYS = ('keep-all', 'keep-last', 'keep-hourly', 'keep-daily', 'keep-weekly', 'keep-monthly', 'keep-yearly')
_BWLIMIT_KEYS = ('clone', 'default', 'migration', 'move', 'restore')

_PROPS = [
    # common, PVE::Storage::Plugin $defaultData->{propertyList}
    Prop('nodes', 'set', doc='Nodes on which the storage is usable.'),
    Prop('content', 'set', doc='Allowed content types.'),
    Prop('disable', 'boolean', doc='Disable the storage.'),
    Prop('shared', 'boolean', doc='Same contents on all nodes.'),
    Prop('maxfiles', 'integer', minimum=0, doc='Deprecated, use prune-backups.'),
    Prop('prune-backups', check=_property_string(_PRUNE_KEYS), doc='Backup retention.'),
    Prop('max-protected-backups', 'integer', minimum=-1),
    Prop('subdir', check=check_path),
    Prop('format', 'enum', choices=('raw', 'qcow2', 'vmdk', 'subvol')),
    Prop('preallocation', 'enum', choices=('off', 'metadata', 'falloc', 'full')),
    Prop('content-dirs', check=check_content_dirs),
    Prop('options', check=check_mount_options),
    Prop('port', 'integer', minimum=1, maximum=65535),
    Prop('bwlimit', check=_property_string(_BWLIMIT_KEYS)),
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
    # glusterfs
    Prop('volume'),
    Prop('server2', check=check_server),
    Prop('transport', 'enum', choices=('tcp', 'rdma', 'unix')),
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
    # lvm / lvmthin
    Prop('vgname', check=check_vgname),
    Prop('base', check=check_volume_id),
    Prop('saferemove', 'boolean'),
    Prop('saferemove_throughput'),
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


_BACKUP_OPTS = 'maxfiles:o prune-backups:o max-protected-backups:o'
_MKDIR_OPTS = 'mkdir:o create-base-path:o create-subdirs:o'
_FILE_CONTENT = ('images', 'rootdir', 'vztmpl', 'iso', 'backup', 'snippets', 'import')

_PW = 'priv/storage/{id}.pw'

TYPES = dict((t.name, t) for t in [
    TypeDef('dir', _opts('path:rf content-dirs:o nodes:o shared:o disable:o content:o format:o is_mountpoint:o '
                         'bwlimit:o preallocation:o %s %s' % (_BACKUP_OPTS, _MKDIR_OPTS)),
            _FILE_CONTENT + ('none',), ('images', 'rootdir'), ('raw', 'qcow2', 'vmdk', 'subvol')),
    TypeDef('nfs', _opts('path:rf content-dirs:o server:rf export:rf nodes:o disable:o options:o content:o '
                         'format:o bwlimit:o preallocation:o %s %s' % (_BACKUP_OPTS, _MKDIR_OPTS)),
            _FILE_CONTENT, ('images',), ('raw', 'qcow2', 'vmdk'), shared=True, path_default=True),
    TypeDef('cifs', _opts('path:rf content-dirs:o server:rf share:rf subdir:o nodes:o disable:o content:o '
                          'format:o username:o password:o domain:o smbversion:o bwlimit:o preallocation:o '
                          'options:o %s %s' % (_BACKUP_OPTS, _MKDIR_OPTS)),
            _FILE_CONTENT, ('images',), ('raw', 'qcow2', 'vmdk'), shared=True, path_default=True,
            secrets=[SecretDef('password', 'password', _PW, 'password={value}\n')]),
    TypeDef('pbs', _opts('server:rf datastore:rf namespace:o port:o nodes:o disable:o content:o username:o '
                         'password:o encryption-key:o master-pubkey:o prune-backups:o '
                         'max-protected-backups:o fingerprint:o'),
            ('backup', 'none'), ('backup',), shared=True,
            secrets=[SecretDef('password', 'password', _PW, '{value}\n'),
                     SecretDef('encryption_key', 'encryption-key', 'priv/storage/{id}.enc', '{value}\n')]),
    TypeDef('glusterfs', _opts('path:rf server:o server2:o volume:rf transport:o nodes:o disable:o content:o '
                               'format:o bwlimit:o preallocation:o %s %s' % (_BACKUP_OPTS, _MKDIR_OPTS)),
            ('images', 'vztmpl', 'iso', 'backup', 'snippets', 'import'), ('images',), ('raw', 'qcow2', 'vmdk'),
            shared=True, path_default=True),
    TypeDef('zfspool', _opts('pool:rf blocksize:o sparse:o nodes:o disable:o content:o bwlimit:o mountpoint:o'),
            ('images', 'rootdir'), ('images', 'rootdir'), ('raw', 'subvol')),
    TypeDef('lvm', _opts('vgname:rf nodes:o shared:o disable:o saferemove:o saferemove_throughput:o content:o '
                         'base:of tagged_only:o bwlimit:o'),
            ('images', 'rootdir'), ('images',)),
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
            ('vztmpl', 'iso', 'backup', 'snippets', 'import'), ('backup',), ('raw', 'qcow2', 'vmdk'),
            shared=True, path_default=True,
            # PVE::CephConfig::ceph_create_keyfile: cephfs keeps the bare secret in <id>.secret
            secrets=[SecretDef('keyring', 'keyring', 'priv/ceph/{id}.secret', '{value}\n')]),
    TypeDef('btrfs', _opts('path:rf nodes:o shared:o disable:o content:o format:o is_mountpoint:o nocow:o '
                           'preallocation:o %s %s' % (_BACKUP_OPTS, _MKDIR_OPTS)),
            _FILE_CONTENT + ('none',), ('images', 'rootdir'), ('raw', 'subvol')),
    TypeDef('zfs', _opts('nodes:o disable:o portal:rf target:rf pool:rf blocksize:rf iscsiprovider:rf '
                         'nowritecache:o sparse:o comstar_hg:o comstar_tg:o lio_tpg:o content:o bwlimit:o'),
            ('images',), ('images',), shared=True),
    TypeDef('esxi', _opts('nodes:o shared:o disable:o content:o server:r username:r password:o '
                          'skip-cert-verification:o port:o'),
            ('import',), ('import',), ('raw', 'qcow2', 'vmdk'),
            secrets=[SecretDef('password', 'password', _PW, '{value}')]),
    # Our plugin (PVE::Storage::Custom::PVESANPlugin). Custom plugins cannot join @SHARED_STORAGE,
    # so `shared 1` has to be written explicitly (driver guide); the module defaults it to true.
    TypeDef('pvesan', _opts('api_url:r auth_token:o ssl_verify_peer:o service_type:o query_include:o '
                            'query_exclude:o transport_encryption:o multipath:o nodes:o shared:o disable:o '
                            'content:o bwlimit:o'),
            ('images', 'rootdir', 'none'), ('images',), custom=True,
            secrets=[SecretDef('auth_token', 'auth_token', _PW, '{value}\n')]),
])

# Properties that hold secrets: never shown, never written to storage.cfg by us.
SECRET_PROPS = frozenset(s.prop for t in TYPES.values() for s in t.secrets.values()
                         if s.prop != 'encryption-key')


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
    return str(value)
