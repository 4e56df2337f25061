# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""storage.cfg parser/writer: admin-guide examples round-trip, canonical output, malformed files.

Fixtures (fixtures/storage_cfg/, see its README.md) are the admin guide's examples verbatim:
default.cfg 4150-4164, dir.cfg 4371-4376, nfs.cfg 4472-4477, cifs.cfg 4551-4558, pbs.cfg 4627-4633,
glusterfs.cfg 4707-4711, zfspool.cfg 4761-4764, lvm.cfg 4841-4843, lvmthin.cfg 4901-4904,
iscsi.cfg 4962-4965, iscsidirect.cfg 5008-5010, rbd.cfg 5074-5078, cephfs.cfg 5171-5175,
zfs.cfg 5321-5353, install-zfs.cfg 1379-1382, install-btrfs.cfg 1813-1820 of pve-admin-guide.txt.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import os

import pytest

from ansible_collections.pvesan.storage.plugins.module_utils._pve_storage_cfg import (
    Section, StorageCfgError, StorageConfig, format_section,
)

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'storage_cfg')
EXAMPLES = sorted(os.path.basename(f) for f in glob.glob(os.path.join(FIXTURES, '*.cfg'))
                  if not os.path.basename(f).startswith('canonical-'))
# the guide's PVE 8 glusterfs example: a type Proxmox VE 9 no longer has (test_glusterfs_section_*)
PVE9_EXAMPLES = [e for e in EXAMPLES if e not in ('pbs.cfg', 'glusterfs.cfg')]


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


@pytest.mark.parametrize('name', PVE9_EXAMPLES)
def test_admin_guide_examples_round_trip_byte_for_byte(name):
    text = fixture(name)
    cfg = StorageConfig.parse(text)
    assert cfg.render() == text
    assert cfg.warnings == []


@pytest.mark.parametrize('name', PVE9_EXAMPLES)
def test_canonical_form_is_a_fixed_point(name):
    canonical = StorageConfig.parse(fixture(name)).render_canonical()
    again = StorageConfig.parse(canonical)
    assert again.render() == canonical
    assert again.render_canonical() == canonical
    assert '\n\n' in canonical and canonical.endswith('\n\n')
    assert all(line == '' or line.startswith('\t') or ': ' in line for line in canonical.split('\n'))


@pytest.mark.parametrize('example, canonical', [
    ('default.cfg', 'canonical-default.cfg'),            # comments dropped, sparse -> 'sparse 1'
    ('install-btrfs.cfg', 'canonical-install-btrfs.cfg'),  # disable right after the header
])
def test_canonical_matches_what_proxmox_writes(example, canonical):
    assert StorageConfig.parse(fixture(example)).render_canonical() == fixture(canonical)


def test_pbs_example_placeholder_fingerprint_is_rejected_with_line():
    # the guide elides the fingerprint ("..snip.."); Proxmox's schema rejects it too
    with pytest.raises(StorageCfgError) as e:
        StorageConfig.parse(fixture('pbs.cfg'))
    assert e.value.lineno == 5 and 'fingerprint' in str(e.value)
    real = fixture('pbs.cfg').replace('09:54:ef:..snip..:88', ':'.join(['ab'] * 19))
    assert StorageConfig.parse(real).render() == real


def test_parsed_values_are_typed():
    cfg = StorageConfig.parse(fixture('default.cfg'))
    assert cfg.order() == ['local', 'local-lvm', 'local-zfs']
    zfs = cfg.get('local-zfs')
    assert zfs.props == {'pool': 'rpool/data', 'sparse': True, 'content': ['images', 'rootdir']}
    assert cfg.get('local').props['content'] == ['backup', 'iso', 'vztmpl']
    nfs = StorageConfig.parse('nfs: iso\n\tserver 10.0.0.10\n\texport /e\n').get('iso')
    assert nfs.props['path'] == '/mnt/pve/iso'  # check_config(create=1) default


def test_glusterfs_section_is_kept_with_the_pve9_warning_and_proxmox_drops_it():
    """Finding 11: PVE 9 has no glusterfs type; its next write drops the section (fact: parse case)."""
    text = fixture('glusterfs.cfg')
    cfg = StorageConfig.parse(text)
    assert cfg.render() == text                       # not ours to delete
    assert len(cfg.warnings) == 1 and 'Proxmox VE 9 has no glusterfs' in cfg.warnings[0]
    assert cfg.render_canonical() == ''               # what Proxmox writes back: nothing of it


def test_a_line_of_blanks_inside_a_section_is_ignored_as_proxmox_ignores_it():
    """Finding 17: Proxmox warns "ignore config line" and the section goes on (fact: parse case)."""
    text = 'dir: d1\n\tpath /srv/d1\n \t \n\tcontent images\n\ndir: d2\n\tpath /srv/d2\n'
    cfg = StorageConfig.parse(text)
    assert cfg.order() == ['d1', 'd2']
    assert cfg.get('d1').props == {'path': '/srv/d1', 'content': ['images']}
    assert len(cfg.warnings) == 1 and 'line 3' in cfg.warnings[0] and 'ignored' in cfg.warnings[0]
    assert cfg.render() == text


# -- malformed files: each case of DESIGN.md gives its error and line -------------------------
@pytest.mark.parametrize('text, lineno, words', [
    ('dir: local\r\n\tpath /var/lib/vz\r\n', 1, 'carriage return'),
    ('dir: local\n\tpath /var/lib/vz\n\ndir: b\n\tpath /b\r\n', 5, 'CRLF'),
    ('dir: local\n\tpath /var/lib/vz\n \ndir: b\n\tpath /b\n', 4, 'empty line before each header'),
    ('dir: local\n\tpath /var/lib/vz\ndir: b\n\tpath /b\n', 3, 'empty line before each header'),
    ('\tpath /var/lib/vz\n', 1, 'outside any section'),
    ('dir local\n\tpath /x\n', 1, 'outside any section'),
    ('dir: 1abc\n\tpath /x\n', 1, 'storage ID'),
    ('dir: a\n\tpath /x\n', 1, 'storage ID'),
    ('dir: ab-\n\tpath /x\n', 1, 'storage ID'),
    ('dir: a_b\n\tpath /x\n\tshared yes\n', 3, 'yes/true/on'),
    ('dir: a_b\n\tpath /x\n\tshared true\n', 3, 'yes/true/on'),
    ('dir: a_b\n\tpath\n', 2, 'needs a value'),
    ('dir: a_b\n\tpath /x\n\tpath /y\n', 3, 'duplicate property'),
    ('dir: ab\n\tpath /x\n\ndir: ab\n\tpath /y\n', 4, 'defined twice'),
    ('lvm: ab\n\tcontent images\n', 1, "required property vgname"),
    ('lvm: ab\n\tvgname pve\n\tcontent iso\n', 3, "content type 'iso'"),
    ('dir: ab\n\tpath /x\n\tmax-protected-backups -2\n', 3, '>= -1'),
    ('dir: ab\n\tpath /x\n\tmax-protected-backups many\n', 3, 'integer'),
    ('dir: ab\n\tpath relative\n', 2, 'absolute path'),
    ('zfs: ab\n\tportal 1.2.3.4\n\ttarget t\n\tpool p\n\tblocksize 4k\n\tiscsiprovider lio\n', 6, 'case sensitive'),
])
def test_malformed_files_fail_with_line_number(text, lineno, words):
    with pytest.raises(StorageCfgError) as e:
        StorageConfig.parse(text)
    assert e.value.lineno == lineno
    assert words in str(e.value)
    assert 'line %d' % lineno in str(e.value)


def test_comment_lines_are_skipped_and_do_not_end_a_section():
    text = '# head\ndir: ab\n\tpath /x\n# inside\n    # indented comment\n\tcontent iso\n\n'
    cfg = StorageConfig.parse(text)
    assert cfg.get('ab').props == {'path': '/x', 'content': ['iso']}
    assert cfg.render() == text


def test_bare_boolean_and_zero_one():
    cfg = StorageConfig.parse('dir: ab\n\tpath /x\n\tdisable\n\tshared 0\n\tmkdir 1\n')
    assert cfg.get('ab').props == {'path': '/x', 'disable': True, 'shared': False, 'mkdir': True}


def test_unknown_property_and_unknown_type_are_kept_with_warning():
    text = ('dir: ab\n\tpath /x\n\tfrobnicate 3\n\n'
            'blockbridge: bb\n\tapi_url https://x\n\tshared 1\n\n')
    cfg = StorageConfig.parse(text)
    assert len(cfg.warnings) == 2
    assert 'frobnicate' in cfg.warnings[0] and 'blockbridge' in cfg.warnings[1]
    assert cfg.render() == text
    assert cfg.get('ab').props['frobnicate'] == '3'
    assert 'blockbridge' not in cfg.render_canonical()   # Proxmox drops unknown types


def test_header_rules():
    cfg = StorageConfig.parse('DIR:   My.Store_1  \n\tpath /x\n')
    section = cfg.get('My.Store_1')
    assert section.type == 'dir'  # Proxmox lower-cases the type


# -- edits --------------------------------------------------------------------------------
def test_replace_keeps_other_sections_bytes_and_writes_canonical_section():
    text = fixture('default.cfg')
    cfg = StorageConfig.parse(text)
    old = cfg.get('local-lvm')
    props = dict(old.props, content=['images'])
    cfg.set(Section('lvmthin', 'local-lvm', props))
    out = cfg.render()
    assert out == text.replace('lvmthin: local-lvm\n        thinpool data\n        vgname pve\n        content rootdir,images\n',
                               'lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent images\n')


def test_add_appends_after_a_blank_line():
    cfg = StorageConfig.parse('dir: local\n\tpath /var/lib/vz\n')   # no blank line at EOF
    cfg.set(Section('lvm', 'vg1', {'vgname': 'vg1', 'shared': True}))
    assert cfg.render() == 'dir: local\n\tpath /var/lib/vz\n\nlvm: vg1\n\tvgname vg1\n\tshared 1\n\n'
    cfg = StorageConfig.parse('# only a comment')
    cfg.set(Section('lvm', 'vg1', {'vgname': 'vg1'}))
    assert cfg.render() == '# only a comment\nlvm: vg1\n\tvgname vg1\n\n'
    assert StorageConfig.parse(cfg.render()).get('vg1').props == {'vgname': 'vg1'}


def test_remove_takes_its_comment_and_blank_line():
    cfg = StorageConfig.parse(fixture('default.cfg'))
    cfg.remove('local-lvm')
    assert cfg.render() == ('dir: local\n        path /var/lib/vz\n        content iso,vztmpl,backup\n\n'
                            '# default image store on ZFS based installation\n'
                            'zfspool: local-zfs\n        pool rpool/data\n        sparse\n        content images,rootdir\n')
    cfg.remove('local-zfs')
    cfg.remove('local')
    assert cfg.render() == ''


def test_format_section_order():
    section = Section('zfs', 'z1', {'sparse': True, 'content': ['images'], 'portal': '10.0.0.1', 'target': 'iqn.x',
                                    'pool': 'tank', 'blocksize': '8k', 'iscsiprovider': 'LIO', 'disable': True,
                                    'nowritecache': False})
    assert format_section(section) == ('zfs: z1\n\tdisable\n\tblocksize 8k\n\tiscsiprovider LIO\n\tpool tank\n'
                                       '\tportal 10.0.0.1\n\ttarget iqn.x\n\tcontent images\n\tnowritecache 0\n'
                                       '\tsparse 1\n')
