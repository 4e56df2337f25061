# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parser and writer for /etc/pve/storage.cfg that follow PVE::SectionConfig exactly.

Reading (PVE::SectionConfig::parse_config, pve-common):
  * header ``^(\\S+):\\s*(\\S+)\\s*$`` (type lower-cased, storage ID checked);
  * property lines ``^\\s+(\\S+)(\\s+(.*\\S))?\\s*$``; a bare key is a boolean 1;
  * lines matching ``^\\s*#`` are skipped everywhere, even inside a section;
  * only a truly empty line ends a section: a line of blanks does not (Proxmox warns
    "ignore config line" and goes on, and so do we), nor does a CR, so a CRLF file swallows
    every section after the first. We refuse CR outright.
Where Proxmox only warns and silently drops data (a second header without an empty line
before it, a value it cannot parse, a duplicate key or ID, a missing required key), we
fail with the line number so that nothing is written over a file we do not understand.
Unknown properties of known types and sections of unknown types (other plugins) are
kept verbatim with a warning; a section we rewrite loses its unknown properties, as it does
when Proxmox writes it. (The real parser's handling of each case is recorded in
fixtures/proxmox/pve-9.1.json; test_pve_storage_facts.py holds this module to it.)

Writing (PVE::SectionConfig::write_config): header, ``disable`` (bare, only when true),
required properties A-Z, optional properties A-Z, booleans as 0/1, one TAB indent and an
empty line after every section. Sections we do not touch keep their exact original
bytes (comments included), so an edit changes only the section it is about.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible_collections.pvesan.storage.plugins.module_utils._files import atomic_write, read_text
from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_schema import (
    MARKER_PROPS, PROPERTIES, REMOVED_IN_PVE9, SECRET_PROPS, TYPES, SchemaError, check_list, check_storage_id,
    check_string, decode_value, encode_value,
)

# re.ASCII: \s is [ \t\n\r\f\v] as in Perl, not every Unicode space.
HEADER_RE = re.compile(r'^(\S+):\s*(\S+)\s*$', re.ASCII)
PROPERTY_RE = re.compile(r'^\s+(\S+)(\s+(.*\S))?\s*$', re.ASCII)
COMMENT_RE = re.compile(r'^\s*#', re.ASCII)


class StorageCfgError(ValueError):
    """storage.cfg cannot be used as it is; ``lineno`` points at the offending line."""

    def __init__(self, msg, lineno=None, path='storage.cfg'):
        self.lineno = lineno
        if lineno is not None:
            msg = '%s line %d: %s' % (path, lineno, msg)
        super(StorageCfgError, self).__init__(msg)


class Section:
    """One ``<type>: <id>`` block. ``raw`` holds the original lines while unchanged."""

    __slots__ = ('type', 'sid', 'props', 'lineno', 'raw')

    def __init__(self, stype, sid, props=None, lineno=None, raw=None):
        self.type = stype
        self.sid = sid
        self.props = dict(props or {})
        self.lineno = lineno
        self.raw = raw

    @property
    def known(self):
        return self.type in TYPES

    def as_dict(self):
        data = dict(self.props)
        data['type'] = self.type
        return data

    def render(self):
        return ''.join(self.raw) if self.raw is not None else format_section(self)


def format_section(section):
    """Canonical text of one section, as PVE::SectionConfig::write_config prints it."""
    tdef = TYPES.get(section.type)
    props = section.props
    out = ['%s: %s\n' % (section.type, section.sid)]
    if props.get('disable'):
        out.append('\tdisable\n')
    keys = [k for k in props if k != 'disable']
    required = sorted(k for k in keys if tdef and 'r' in tdef.options.get(k, ''))
    optional = sorted(k for k in keys if k not in required)
    for key in required + optional:
        value = props[key]
        if value is None:           # bare unknown key kept verbatim
            out.append('\t%s\n' % key)
            continue
        text = encode_value(key, value)
        if text != '':
            out.append('\t%s %s\n' % (key, text))
    return ''.join(out)


class StorageConfig:
    """storage.cfg as a list of chunks: Section objects and raw text between them."""

    def __init__(self, path='storage.cfg'):
        self.path = path
        self.chunks = []
        self.sections = {}
        self.warnings = []

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def parse(cls, text, path='storage.cfg'):
        cfg = cls(path)
        if '\r' in text:
            lineno = text.count('\n', 0, text.index('\r')) + 1
            raise StorageCfgError("carriage return found (CRLF line endings?). Proxmox only ends a section "
                                  "at an empty line, so with CRLF every section after the first is lost; "
                                  "convert the file to LF line endings (sed -i 's/\\r$//')", lineno, path)
        lines = text.split('\n')
        ends = ['\n'] * (len(lines) - 1) + ['']
        if lines[-1] == '':
            lines.pop()
            ends.pop()
        gap = []
        cur = None
        for lineno, (body, end) in enumerate(zip(lines, ends), 1):
            line = body + end
            if cur is not None:
                if body == '':
                    cfg._finish(cur)
                    cur = None
                    gap.append(line)
                    continue
                cur.raw.append(line)
                if COMMENT_RE.match(body):
                    continue
                if body.strip() == '':
                    cfg.warnings.append("%s line %d: a line of blanks inside section '%s' does not end it; "
                                        "ignored, as Proxmox ignores it" % (path, lineno, cur.sid))
                    continue
                m = PROPERTY_RE.match(body)
                if m:
                    cfg._add_property(cur, m.group(1), m.group(3), lineno)
                elif HEADER_RE.match(body):
                    raise StorageCfgError("section header inside section '%s': Proxmox needs an empty line "
                                          "before each header and would ignore this section" % cur.sid, lineno, path)
                else:
                    raise StorageCfgError("cannot parse %r in section '%s': property lines are "
                                          "'<TAB>key value', and only an empty line (not one of blanks) "
                                          "ends a section" % (body, cur.sid), lineno, path)
                continue
            if body == '' or COMMENT_RE.match(body):
                gap.append(line)
                continue
            m = HEADER_RE.match(body)
            if not m:
                raise StorageCfgError("line %r is outside any section: properties must follow a "
                                      "'<type>: <id>' header with no empty line in between" % body, lineno, path)
            if gap:
                cfg.chunks.append(''.join(gap))
                gap = []
            stype, sid = m.group(1).lower(), m.group(2)
            try:
                check_storage_id(sid)
            except SchemaError as e:
                raise StorageCfgError(str(e), lineno, path)
            cur = Section(stype, sid, lineno=lineno, raw=[line])
            if not cur.known:
                why = REMOVED_IN_PVE9.get(stype, 'a custom plugin?')
                cfg.warnings.append("%s line %d: section '%s' has type '%s', which pve-storage does not know "
                                    "(%s); kept as it is" % (path, lineno, sid, stype, why))
        if cur is not None:
            cfg._finish(cur)
        if gap:
            cfg.chunks.append(''.join(gap))
        return cfg

    def _add_property(self, section, key, text, lineno):
        props = section.props
        if not section.known:
            # PVE's allow_unknown mode: repeated keys become a list
            if key in props:
                old = props[key]
                props[key] = (old if isinstance(old, list) else [old]) + [text]
            else:
                props[key] = text
            return
        if key in props:
            raise StorageCfgError("duplicate property '%s' in section '%s'" % (key, section.sid), lineno, self.path)
        if key not in TYPES[section.type].options:
            why = REMOVED_IN_PVE9.get(key, 'Proxmox drops it when it writes the file')
            self.warnings.append("%s line %d: property '%s' is not known for type '%s' (%s); kept until this "
                                 "section is written" % (self.path, lineno, key, section.type, why))
            props[key] = text
            return
        try:
            props[key] = decode_value(section.type, key, text)
        except SchemaError as e:
            raise StorageCfgError("section '%s': %s" % (section.sid, e), lineno, self.path)

    def _finish(self, section):
        if section.sid in self.sections:
            raise StorageCfgError("storage ID '%s' is defined twice (first at line %d); Proxmox silently keeps "
                                  "only the last one" % (section.sid, self.sections[section.sid].lineno),
                                  section.lineno, self.path)
        if section.known:
            if TYPES[section.type].path_default and 'path' not in section.props:
                # parse_config calls check_config(create=1), which fills in the mount point
                section.props['path'] = '/mnt/pve/%s' % section.sid
            missing = [k for k in TYPES[section.type].required() if k not in section.props]
            if missing:
                raise StorageCfgError("section '%s' (type %s) lacks required property %s; Proxmox cannot write "
                                      "storage.cfg while it is broken" % (section.sid, section.type, ', '.join(missing)),
                                      section.lineno, self.path)
        self.sections[section.sid] = section
        self.chunks.append(section)

    # -- access and edits -----------------------------------------------------------------
    def get(self, sid):
        return self.sections.get(sid)

    def order(self):
        return [c.sid for c in self.chunks if isinstance(c, Section)]

    def set(self, section):
        """Add a section at the end, or replace the one with the same ID in place."""
        old = self.sections.get(section.sid)
        if old is None:
            self.chunks.append(section)
        else:
            self.chunks[self.chunks.index(old)] = section
        self.sections[section.sid] = section

    def remove(self, sid):
        section = self.sections.pop(sid)
        idx = self.chunks.index(section)
        del self.chunks[idx]
        # drop the empty line that ended it ...
        if idx < len(self.chunks) and isinstance(self.chunks[idx], str) and self.chunks[idx].startswith('\n'):
            self.chunks[idx] = self.chunks[idx][1:]
        # ... and the comment lines written right above its header
        if idx > 0 and isinstance(self.chunks[idx - 1], str):
            lines = self.chunks[idx - 1].splitlines(True)
            while lines and COMMENT_RE.match(lines[-1]):
                lines.pop()
            self.chunks[idx - 1] = ''.join(lines)
        self.chunks = [c for c in self.chunks if c != '']

    # -- writing ---------------------------------------------------------------------------
    def render(self):
        out = []
        last = len(self.chunks) - 1
        for i, chunk in enumerate(self.chunks):
            if isinstance(chunk, str):
                out.append(chunk)
                if i < last and not chunk.endswith('\n'):
                    out.append('\n')  # comment at EOF without newline, then a new section
                continue
            text = chunk.render()
            out.append(text)
            nxt = self.chunks[i + 1] if i < last else None
            if isinstance(nxt, str) and nxt.startswith('\n'):
                continue  # the following empty line ends the section
            if chunk.raw is not None and nxt is None:
                continue  # untouched last section: keep the original bytes
            if not text.endswith('\n'):
                out.append('\n')
            out.append('\n')
        return ''.join(out)

    def render_canonical(self):
        """The whole file as Proxmox itself would write it (comments and unknown keys dropped)."""
        out = []
        for chunk in self.chunks:
            if isinstance(chunk, Section) and chunk.known:
                props = dict((k, v) for k, v in chunk.props.items() if k in TYPES[chunk.type].options)
                out.append(format_section(Section(chunk.type, chunk.sid, props)) + '\n')
        return ''.join(out)


# -- turning module input into a section ---------------------------------------------------
def coerce_value(stype, key, value):
    """Module/YAML input -> the Python value the parser would produce, or SchemaError."""
    prop = PROPERTIES[key]
    if prop.kind == 'boolean':
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ('0', '1', 'yes', 'no', 'true', 'false', 'on', 'off'):
            return value.lower() in ('1', 'yes', 'true', 'on')
        raise SchemaError("property '%s' must be a boolean, got %r" % (key, value))
    if prop.kind == 'integer':
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip('+-').isdigit())):
            raise SchemaError("property '%s' must be an integer, got %r" % (key, value))
        return decode_value(stype, key, str(int(value)))
    if prop.kind in ('set', 'list'):
        if isinstance(value, str):
            value = [v for v in re.split(r'[,;\s]+', value) if v]
        if not isinstance(value, (list, tuple)) or any(isinstance(v, (dict, list)) for v in value):
            raise SchemaError("property '%s' must be a list of strings, got %r" % (key, value))
        return check_list(stype, key, value)
    if isinstance(value, (dict, list, tuple)) or value is None:
        raise SchemaError("property '%s' must be a string, got %r" % (key, value))
    if isinstance(value, bool):
        raise SchemaError("property '%s' must be a string, got a boolean (quote it in YAML)" % key)
    return check_string(stype, key, str(value))


def desired_props(stype, sid, props):
    """Validate every declared property for storage type ``stype``; return the typed dict."""
    check_storage_id(sid)
    tdef = TYPES.get(stype)
    if tdef is None:
        known = 'known: %s' % ', '.join(sorted(TYPES))
        raise SchemaError("unknown storage type %r (%s)" % (stype, REMOVED_IN_PVE9.get(stype, known)))
    secrets = SECRET_PROPS.union(s.prop for s in tdef.secrets.values())
    out = {}
    for key, value in props.items():
        if key in secrets:
            option = dict((s.prop, s.option) for t in TYPES.values() for s in t.secrets.values()).get(key, key)
            raise SchemaError("'%s' is a secret or key: pass it with the module's option '%s' instead (no_log); it "
                              "is kept under <config_root>/priv, never in storage.cfg" % (key, option))
        if key not in tdef.options:
            hint = ''
            if key == 'shared' and tdef.shared:
                hint = ' (type %s is always shared)' % stype
            elif key in REMOVED_IN_PVE9:
                hint = ' (%s)' % REMOVED_IN_PVE9[key]
            raise SchemaError("property '%s' is not valid for storage type '%s'%s; valid: %s"
                              % (key, stype, hint, ', '.join(sorted(k for k in tdef.options if k not in secrets))))
        if key == 'shared' and tdef.shared and value is not None and not coerce_value(stype, key, value):
            raise SchemaError("storage type '%s' is always shared: Proxmox marks it so and overrides 'shared 0' "
                              "(PVE::Storage::Plugin::parse_config, @SHARED_STORAGE)" % stype)
        if key == 'nodes' and value is not None and coerce_value(stype, key, value) == []:
            value = None    # no node restriction: Proxmox writes no nodes line
        if value is None:
            # null: remove the property (only optional, non-fixed ones can be removed, as in Proxmox)
            if tdef.options[key] != 'o':
                raise SchemaError("property '%s' is %s for storage type '%s' and cannot be removed"
                                  % (key, 'fixed' if 'f' in tdef.options[key] else 'required', stype))
            out[key] = None
            continue
        out[key] = coerce_value(stype, key, value)
    if sid == 'local' and (stype != 'dir' or out.get('path', '/var/lib/vz') != '/var/lib/vz' or out.get('nodes')):
        raise SchemaError("storage 'local' must be type dir with path /var/lib/vz and no nodes: Proxmox "
                          "forces it so (PVE::Storage::Plugin::parse_config)")
    return out


def plan_present(cfg, sid, stype, props, purge=False):
    """Return (old_section, new_section) for state=present; new is old when nothing changes.

    ``props`` come from desired_props(). Raises SchemaError when the change is not allowed.
    """
    old = cfg.get(sid)
    if old is None:
        if stype is None:
            raise SchemaError("storage '%s' does not exist; give its type to create it" % sid)
        tdef = TYPES[stype]
        new_props = dict((k, v) for k, v in props.items() if v is not None)
        if tdef.path_default and 'path' not in new_props:
            new_props['path'] = '/mnt/pve/%s' % sid  # what check_config does on create
        if tdef.shared and 'shared' in tdef.options:
            new_props['shared'] = True  # parse_config sets it; Proxmox writes `shared 1` from then on
        if 'content' not in new_props and tdef.default_content:
            new_props['content'] = sorted(tdef.default_content)  # what parse_config fills in
        if new_props.get('disable') is False:
            del new_props['disable']  # Proxmox never writes 'disable 0'
        missing = [k for k in tdef.required() if k not in new_props and k not in SECRET_PROPS]
        if missing:
            raise SchemaError("storage type '%s' requires %s" % (stype, ', '.join(missing)))
        return None, Section(stype, sid, new_props)
    if stype is not None and old.type != stype:
        raise SchemaError("storage '%s' exists with type '%s', not '%s'; the type cannot change "
                          "(remove it with state=absent first)" % (sid, old.type, stype))
    if not old.known:
        raise SchemaError("storage '%s' has type '%s', which this module does not know" % (sid, old.type))
    tdef = TYPES[old.type]
    new_props = dict(old.props)
    if purge:
        for key in list(new_props):
            flags = tdef.options.get(key, 'o')
            if key not in props and 'r' not in flags and 'f' not in flags and key not in MARKER_PROPS:
                del new_props[key]
    for key, value in props.items():
        if value is None:
            new_props.pop(key, None)
            continue
        if 'f' in tdef.options[key] and new_props.get(key) != value:
            raise SchemaError("property '%s' of storage '%s' is fixed after creation (now %r, requested %r); "
                              "Proxmox refuses to change it: remove the storage and add it again"
                              % (key, sid, new_props.get(key), value))
        new_props[key] = value
    if new_props.get('disable') is False:
        del new_props['disable']
    if tdef.shared and 'shared' in tdef.options:
        new_props['shared'] = True
    if new_props == old.props:
        return old, old
    # a rewritten section loses what Proxmox would drop when it writes it
    new_props = dict((k, v) for k, v in new_props.items() if k in tdef.options)
    return old, Section(old.type, sid, new_props)


def dropped_keys(old, new):
    """Unknown properties a rewrite of ``old`` into ``new`` drops (for a warning)."""
    if old is None or new is None or new is old or not old.known:
        return []
    return sorted(k for k in old.props if k not in TYPES[old.type].options)


# -- files ---------------------------------------------------------------------------------
class StorageCfgFile:
    """storage.cfg and the secret files of a config root (default /etc/pve)."""

    MODE = 0o640   # Proxmox: root:www-data 0640

    def __init__(self, config_root='/etc/pve'):
        self.root = config_root
        self.path = os.path.join(config_root, 'storage.cfg')

    def read(self):
        text = read_text(self.path)
        return StorageConfig.parse(text or '', self.path)

    def write(self, cfg, mover=None):
        # a symlinked storage.cfg stays a symlink: the file it points to is replaced
        atomic_write(os.path.realpath(self.path), cfg.render(), self.MODE, mover)

    def secret_path(self, secret, sid):
        return os.path.join(self.root, secret.path.format(id=sid))

    def secret_paths(self, stype, sid):
        tdef = TYPES.get(stype)
        return [self.secret_path(s, sid) for s in tdef.secrets.values()] if tdef else []

    def write_secret(self, path, content):
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o700)
        # os.replace, not atomic_move: atomic_move widens a new file to 0666 & ~umask
        atomic_write(path, content, 0o600)

    @staticmethod
    def remove_secret(path):
        try:
            os.unlink(path)
            return True
        except OSError:
            return False


def secret_content(stype, option, value):
    """(file content, extra storage.cfg props) for a secret module option."""
    secret = TYPES[stype].secrets[option]
    extra = {}
    if secret.prop == 'encryption-key':
        import json
        try:
            key = json.loads(value)
            if not isinstance(key, dict) or 'data' not in key:
                raise ValueError
        except ValueError:
            raise SchemaError("encryption_key must be the JSON key file of proxmox-backup-client "
                              "('proxmox-backup-client key create --kdf none <file>'); 'autogen' is not supported")
        extra['encryption-key'] = key.get('fingerprint') or '1'  # what PBSPlugin::on_add_hook stores
    if secret.prop == 'master-pubkey':
        value = _master_pubkey_pem(value)
        extra['master-pubkey'] = '1'  # PBSPlugin::on_add_hook: the key goes to <id>.master.pem
    if secret.prop in ('keyring', 'password', 'auth_token'):
        value = value.rstrip('\n') if secret.prop == 'keyring' else value
        if '\n' in value and secret.prop != 'keyring':
            raise SchemaError("%s must be a single line" % option)
    if not value:
        raise SchemaError("%s must not be empty" % option)
    return secret.template.format(value=value), extra


def _master_pubkey_pem(value):
    """A PBS master public key: base64 of the PEM (as pvesm and the API take it) or the PEM itself."""
    import base64
    import binascii
    text = value.lstrip()
    if not text.startswith('-----BEGIN'):
        try:
            text = base64.b64decode(''.join(value.split()), validate=True).decode('ascii')
        except (binascii.Error, ValueError, UnicodeDecodeError):
            text = ''
    if not re.match(r'^-----BEGIN (RSA )?PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+-----END (RSA )?PUBLIC KEY-----\n?$', text):
        raise SchemaError("master_pubkey must be a PEM-formatted RSA public key ('proxmox-backup-client key "
                          "create-master-key' writes one), as PEM text or base64 of it")
    return text  # the file gets it plus a newline, as PBSPlugin writes "$key\n"
