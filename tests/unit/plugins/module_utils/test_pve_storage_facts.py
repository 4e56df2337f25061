# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pve_storage schema and the Proxmox plugin, held to what Proxmox's own code says.

fixtures/proxmox/pve-9.1.json (and pve-8.4.json) were dumped by scripts/proxmox-check.sh facts
from the real pve-storage 9.1.7 / pve-common 9.2.1 (8.3.8 for PVE 8.4): every storage type's
options, content, formats and sensitive properties, every property's schema, and 72+ storage.cfg
texts as the real SectionConfig parsed and wrote them. Nothing here reads Proxmox's code; it
reads what that code printed.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import subprocess

import pytest

from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_cfg import (
    Section, StorageCfgError, StorageConfig, format_section,
)
from ansible_collections.pvesan.storage.plugins.module_utils import _pve_storage_schema as pve_storage_schema
from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_schema import (
    PROPERTIES, TYPES, SchemaError, decode_value,
)

HERE = os.path.dirname(__file__)
REPO = os.path.abspath(os.path.join(HERE, '..', '..', '..', '..'))


def facts(release):
    with open(os.path.join(HERE, 'fixtures', 'proxmox', 'pve-%s.json' % release)) as f:
        return json.load(f)


PVE9 = facts('9.1')
PVE8 = facts('8.4')
BUILTIN = dict((t, d) for t, d in PVE9['schema']['types'].items())


def flags(opt):
    return ('o' if opt.get('optional') else 'r') + ('f' if opt.get('fixed') else '')


def test_the_facts_name_their_sources():
    assert PVE9['sources']['pve-storage'] == {'version': '9.1.7', 'commit': '0c56bad8b2a7d69e5ce2c243651fe830d6caa936'}
    assert PVE9['sources']['pve-common']['version'] == '9.2.1'
    assert PVE9['api'] == {'APIVER': 15, 'APIAGE': 6, 'known_export_formats': PVE9['api']['known_export_formats']}
    assert PVE8['sources']['pve-storage']['version'] == '8.3.8' and PVE8['api']['APIVER'] == 11


def test_every_type_of_pve_9_1_and_no_other():
    """Finding 11: glusterfs is gone in PVE 9."""
    assert sorted(t for t, d in TYPES.items() if not d.custom) == sorted(BUILTIN)


@pytest.mark.parametrize('stype', sorted(BUILTIN))
def test_options_are_those_of_pve_9_1(stype):
    """Findings 12, 13: the PVE 9 options (snapshot-as-volume-chain, saferemove-stepsize, zfs-base-path),
    no maxfiles; optional/fixed exactly as the plugin's options() say."""
    want = dict((k, flags(v)) for k, v in BUILTIN[stype]['options'].items())
    assert TYPES[stype].options == want


@pytest.mark.parametrize('stype', sorted(BUILTIN))
def test_content_formats_shared_and_secrets_are_those_of_pve_9_1(stype):
    pve, ours = BUILTIN[stype], TYPES[stype]
    if pve['content']:
        assert sorted(ours.content) == pve['content'][0]
        assert sorted(ours.default_content) == pve['content'][1]
    assert sorted(ours.formats) == (pve['format'][0] if pve['format'] else [])
    assert ours.shared == pve['shared']
    # the sensitive properties are exactly what the module takes through its no_log options
    sensitive = set(pve['sensitive-properties']) & set(pve['options'])
    assert set(s.prop for s in ours.secrets.values()) == sensitive


@pytest.mark.parametrize('name', sorted(p for p in PVE9['schema']['properties'] if p not in ('type', 'storage')))
def test_property_schema_matches(name):
    pve = PVE9['schema']['properties'][name]
    used = any(name in d['options'] for d in BUILTIN.values())
    if not used:
        assert name == 'authsupported' and name not in PROPERTIES  # declared by rbd, in no options()
        return
    ours = PROPERTIES[name]
    kind = {'boolean': 'boolean', 'integer': 'integer'}.get(pve['type'], 'string')
    if 'enum' in pve:
        assert ours.kind == 'enum' and sorted(ours.choices) == sorted(str(c) for c in pve['enum'])
    elif name in ('content', 'nodes'):
        assert ours.kind == 'set'
    elif name == 'iscsiprovider':
        assert ours.kind == 'enum'  # a plain string in PVE, but ZFSPlugin dies on anything but these
    else:
        assert ours.kind == kind
    if 'minimum' in pve and ours.kind == 'integer':
        assert ours.minimum == int(pve['minimum'])
    if 'maximum' in pve and ours.kind == 'integer':
        assert ours.maximum == int(pve['maximum'])
    assert ours.max_length == pve.get('maxLength')


def test_no_property_proxmox_does_not_have_except_ours():
    extra = sorted(k for k, p in PROPERTIES.items() if k not in PVE9['schema']['properties'])
    assert extra == sorted(k for k, p in PROPERTIES.items() if p.owner == 'pvesan')


def test_pve8_differences_are_what_the_two_releases_say():
    a, b = PVE8['schema'], PVE9['schema']
    PVE8_DIFFERENCES = pve_storage_schema.PVE8_DIFFERENCES
    assert PVE8_DIFFERENCES['types only in 8.4'] == sorted(set(a['types']) - set(b['types']))
    assert PVE8_DIFFERENCES['properties only in 8.4'] == sorted(set(a['properties']) - set(b['properties']))
    assert PVE8_DIFFERENCES['properties only in 9.1'] == sorted(set(b['properties']) - set(a['properties']))
    only8, only9 = {}, {}
    for t in set(a['types']) & set(b['types']):
        for k in set(a['types'][t]['options']) - set(b['types'][t]['options']):
            only8.setdefault(k, []).append(t)
        for k in set(b['types'][t]['options']) - set(a['types'][t]['options']):
            only9.setdefault(k, []).append(t)
    assert PVE8_DIFFERENCES['options only in 8.4'] == dict((k, sorted(v)) for k, v in only8.items())
    assert PVE8_DIFFERENCES['options only in 9.1'] == dict((k, sorted(v)) for k, v in only9.items())
    assert [t for t in b['types'] if t in a['types'] and a['types'][t]['format'] != b['types'][t]['format']] \
        == sorted(PVE8_DIFFERENCES['formats'])


# -- storage.cfg texts: our parser and validators against what the real SectionConfig did ------
CASES = dict((c['name'], c) for c in PVE9['parse_cases'])
# Files whose structure Proxmox misreads and silently loses data of (a second value of a key, a header
# without the empty line before it, a line "0" that ends a section, CRLF, a duplicate ID): refused.
STRUCTURE_REFUSED = {'duplicate-key', 'no-empty-line-before-header', 'line-zero', 'crlf', 'duplicate-id'}
PVE_TRUE = ('1', 'true', 'yes', 'on')


def section_lines(text):
    """{sid: (type, [(lineno, key, value)])} of a storage.cfg text, by the header/property grammar."""
    out, cur, lineno = {}, None, 0
    for lineno, line in enumerate(text.split('\n'), 1):
        if line == '':
            cur = None
            continue
        m = re.match(r'^(\S+):\s*(\S+)\s*$', line)
        if m and cur is None:
            cur = m.group(2)
            out[cur] = (m.group(1).lower(), [])
            continue
        m = re.match(r'^\s+(\S+)(\s+(.*\S))?\s*$', line)
        if m and cur is not None:
            out[cur][1].append((lineno, m.group(1), m.group(3)))
    return out


def proxmox_took(case, sid, lineno, key, value):
    """Whether the real parser kept this property line silently."""
    section = case['ids'].get(sid)
    if key not in section:
        return False
    for w in case['warnings']:
        if re.search(r' line %d \(' % lineno, w):
            return False
        m = re.match(r"storage does not support (?:content type|format) '([^']+)'", w)
        if m and key in ('content', 'content-dirs', 'format') and m.group(1) in re.split(r'[,=;\s]', value or ''):
            return False
    return True


def normal(key, value):
    """A parsed value as data (Proxmox: hashes of 1, 0/1; ours: sorted lists, True/False)."""
    if isinstance(value, dict):
        return sorted(value) if key in ('content', 'nodes') else sorted('%s=%s' % kv for kv in value.items())
    if isinstance(value, bool):
        return int(value)
    if key == 'content-dirs':
        return sorted(value.split(','))
    if key in ('content', 'nodes') and isinstance(value, list):
        return sorted(value)
    if isinstance(value, list):
        return ','.join(value)
    if PROPERTIES.get(key) is not None and PROPERTIES[key].kind == 'boolean':
        return int(value)
    return str(value)


@pytest.mark.parametrize('name', sorted(CASES))
def test_every_property_line_is_judged_as_proxmox_judged_it(name):
    """Finding 14: a value Proxmox drops (or whose section it drops) is refused; one it keeps is
    accepted with the same meaning - prune-backups, content-dirs, a bracketed IPv6 server, format on
    cephfs, fractional bwlimit, and every other line of the recorded texts."""
    case = CASES[name]
    if name in STRUCTURE_REFUSED:
        pytest.skip('the file as a whole is refused (test_files_where_proxmox_drops_a_section_or_data_are_refused)')
    for sid, (stype, lines) in section_lines(case['text']).items():
        if stype not in TYPES or sid == 'local' or not case['ids'].get(sid):
            continue    # unknown types, the forced `local`, sections Proxmox dropped (own tests)
        for lineno, key, value in lines:
            if key not in TYPES[stype].options:
                continue    # unknown for the type: kept with a warning until rewritten (own tests)
            took = proxmox_took(case, sid, lineno, key, value)
            try:
                ours = decode_value(stype, key, value)
                accepted = True
            except SchemaError:
                accepted = False
            assert accepted == took, '%s line %d: %s %r: Proxmox %s it, we %s it' % (
                name, lineno, key, value, 'kept' if took else 'dropped', 'accept' if accepted else 'refuse')
            if took and key != 'shared':
                assert normal(key, ours) == normal(key, case['ids'][sid][key])


def effective(section):
    """What Proxmox's parse_config makes of a section: the type's default content, shared types."""
    props = dict(section.props)
    tdef = TYPES[section.type]
    if 'content' not in props and tdef.default_content:
        props['content'] = sorted(tdef.default_content)
    if tdef.shared:
        props['shared'] = True
    return props


# Read silently by Proxmox but refused by us, on purpose: a duplicate storage ID (Proxmox keeps the
# last section without a word; test_pve_storage_cfg: "defined twice").
REFUSED_ON_PURPOSE = {'duplicate-id'}


@pytest.mark.parametrize('name', sorted(n for n, c in CASES.items()
                                        if not c['warnings'] and c.get('written') and n not in REFUSED_ON_PURPOSE))
def test_files_proxmox_reads_silently_parse_to_the_same_sections(name):
    """Accepted texts: the same sections, the same values, and the canonical text Proxmox writes."""
    case = CASES[name]
    cfg = StorageConfig.parse(case['text'])
    assert cfg.warnings == []
    written = dict((s.split('\n', 1)[0], s) for s in case['written'].split('\n\n') if s)
    for sid in cfg.order():
        if sid == 'local':
            continue    # Proxmox forces its own `local` (desired_props refuses another one)
        section = cfg.get(sid)
        pve = case['ids'][sid]
        props = effective(section)
        assert sorted(props) == sorted(k for k in pve if k != 'type')
        for key, value in props.items():
            assert normal(key, value) == normal(key, pve[key]), key
        # the text Proxmox writes for it (its content/nodes lists are in hash order)
        written_props = dict((k, v) for k, v in props.items() if k in TYPES[section.type].options)
        ours = format_section(Section(section.type, sid, written_props)).rstrip('\n').split('\n')
        theirs = written['%s: %s' % (section.type, sid)].split('\n')
        assert [re.sub(r'^(\t(?:content|nodes) ).*', r'\1', l) for l in ours] == \
            [re.sub(r'^(\t(?:content|nodes) ).*', r'\1', l) for l in theirs]


@pytest.mark.parametrize('name', ['missing-required', 'dir-bad-path', 'nfs-server-ipv6-bracketed', 'bad-storage-id']
                         + sorted(STRUCTURE_REFUSED))
def test_files_where_proxmox_drops_a_section_or_data_are_refused(name):
    with pytest.raises(StorageCfgError):
        StorageConfig.parse(CASES[name]['text'])


@pytest.mark.parametrize('name, sid, kept', [
    ('glusterfs', 'gl', False), ('pvesan', 'san', True), ('unknown-key', 'd1', True),
    ('maxfiles-dir', 'd1', True), ('whitespace-only-line', 'd1', True),
])
def test_files_with_warnings_are_kept_with_a_warning(name, sid, kept):
    """Sections Proxmox keeps (dropping a line) or drops (an unknown type) are left as they are,
    with a warning that says what Proxmox does."""
    case = CASES[name]
    cfg = StorageConfig.parse(case['text'])
    assert (sid in case['ids']) == kept
    assert cfg.render() == case['text']
    assert cfg.warnings or not case['warnings']


def test_pvesan_shared_is_forced_and_written_by_proxmox():
    """Finding 16: Proxmox marks pvesan shared (the plugin joins @SHARED_STORAGE), overrides
    `shared 0` and writes `shared 1`; so the module writes `shared 1` and refuses shared: false."""
    for name in ('pvesan', 'pvesan-no-content', 'pvesan-shared-0'):
        assert CASES[name]['ids']['san']['shared'] == 1
        assert '\tshared 1\n' in CASES[name]['written']
    assert PVE9['pvesan']['shared'] is True and PVE9['pvesan']['loaded'] is True


def test_pbs_master_pubkey_as_proxmox_stores_it():
    """Finding 15: PBSPlugin::on_add_hook writes the decoded key plus a newline to
    priv/storage/<id>.master.pem and sets `master-pubkey 1`; it refuses one without encryption-key."""
    fact = PVE9['pbs_master_pubkey']
    assert fact['file'] == '/etc/pve/priv/storage/pbs1.master.pem'
    assert fact['file_is_decoded_pem_plus_newline'] is True
    assert fact['scfg_master_pubkey'] == 1 and fact['error'] is None
    assert 'only be used together' in fact['without_encryption_key']
    secret = TYPES['pbs'].secrets['master_pubkey']
    assert (secret.prop, secret.path, secret.template) == ('master-pubkey', 'priv/storage/{id}.master.pem', '{value}\n')


# -- one declaration of the pvesan type: the plugin's own properties(), options(), plugindata() --
DUMP = r'''
use strict; use warnings; use JSON::PP;
require PVE::Storage;
require "$ENV{PLUGIN}";
my $P = 'PVE::Storage::Custom::PVESANPlugin';
print JSON::PP->new->canonical->encode({
    properties => $P->properties(), options => $P->options(), plugindata => $P->plugindata(),
    shared => (grep({ $_ eq 'pvesan' } @PVE::Storage::Plugin::SHARED_STORAGE) ? 1 : 0),
});
'''


@pytest.fixture(scope='module')
def plugin():
    env = dict(os.environ, PLUGIN=os.path.join(REPO, 'roles', 'pve_host', 'files', 'PVESANPlugin.pm'))
    out = subprocess.check_output(['perl', '-I', os.path.join(REPO, 'tests', 'perl', 'lib'), '-e', DUMP], env=env)
    return json.loads(out.decode('utf-8'))


def test_pvesan_options_are_the_plugins(plugin):
    assert TYPES['pvesan'].options == dict((k, flags(v)) for k, v in plugin['options'].items())


def test_pvesan_properties_are_the_plugins(plugin):
    ours = dict((k, p) for k, p in PROPERTIES.items() if p.owner == 'pvesan')
    assert sorted(ours) == sorted(plugin['properties'])
    for name, schema in plugin['properties'].items():
        if 'enum' in schema:
            assert ours[name].kind == 'enum' and list(ours[name].choices) == schema['enum']
        elif schema['type'] == 'boolean':
            assert ours[name].kind == 'boolean'
        else:
            assert ours[name].kind in ('string', 'list')


def test_pvesan_content_formats_secrets_and_shared_are_the_plugins(plugin):
    pd, tdef = plugin['plugindata'], TYPES['pvesan']
    assert sorted(tdef.content) == sorted(pd['content'][0]) and sorted(tdef.default_content) == sorted(pd['content'][1])
    assert sorted(tdef.formats) == sorted(pd['format'][0])
    assert set(s.prop for s in tdef.secrets.values()) == set(pd['sensitive-properties'])
    assert tdef.shared == bool(plugin['shared'])
