# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Persistent tgt configuration of one target: ``/etc/tgt/conf.d/<name>.conf``.

tgt-admin reads these files when tgtd starts (``tgt-admin -e``), so a target set up at runtime
with tgtadm survives a tgtd restart. The file also remembers what ``tgtadm --op show`` cannot
report (CHAP passwords, vendor/product ids, write cache), which is how the iscsi_target module
stays idempotent for them. Target dicts are those of ``tgtadm.py``.

Standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

HEADER = '# Managed by pvesan.storage.iscsi_target; local changes are overwritten.\n'
# tgt's caching mode page with WCE set (its default) - the counterpart of tgtadm.py's "off" page.
WRITE_CACHE_ON_MODE_PAGE = 'mode_page=8:0:18:0x14:0:0xff:0xff:0:0:0xff:0xff:0xff:0xff:0x80:0x14:0:0:0:0:0:0'
MASK = '********'
# Target parameters tgt-admin applies from a config file; others exist only at runtime.
PERSISTENT_ATTRIBUTES = ('MaxRecvDataSegmentLength', 'MaxXmitDataSegmentLength', 'HeaderDigest', 'DataDigest',
                         'InitialR2T', 'MaxOutstandingR2T', 'ImmediateData', 'FirstBurstLength', 'MaxBurstLength',
                         'DataPDUInOrder', 'DataSequenceInOrder', 'ErrorRecoveryLevel', 'DefaultTime2Wait',
                         'DefaultTime2Retain', 'MaxConnections')


def file_name(iqn):
    """A conf.d file name for a target: the IQN with anything but [A-Za-z0-9._-] replaced."""
    return re.sub(r'[^A-Za-z0-9._-]', '_', iqn) + '.conf'


def _value(value):
    value = str(value)
    if not value or re.search(r'[\s<>"#]', value):
        raise ValueError('value %r cannot be written to a tgt config file' % value)
    return value


def render(target, mask_secrets=False):
    """tgt-admin syntax for one target dict; mask_secrets hides passwords (for diffs)."""
    lines = [HEADER.rstrip('\n'), '<target %s>' % _value(target['iqn'])]
    for lun in sorted(target.get('luns') or [], key=lambda item: item['lun']):
        lines.append('\t<backing-store %s>' % _value(lun['path']))
        lines.append('\t\tlun %d' % lun['lun'])
        for key, word in (('serial', 'scsi_sn'), ('vendor', 'vendor_id'), ('product', 'product_id'),
                          ('bstype', 'bs-type'), ('bsoflags', 'bsoflags')):
            if lun.get(key):
                lines.append('\t\t%s %s' % (word, _value(lun[key])))
        if lun.get('block_size') and int(lun['block_size']) != 512:
            lines.append('\t\tblock-size %d' % int(lun['block_size']))
        if lun.get('readonly'):
            lines.append('\t\treadonly 1')
        if lun.get('write_cache') is not None:
            lines.append('\t\twrite-cache %s' % ('on' if lun['write_cache'] else 'off'))
        lines.append('\t</backing-store>')
    for initiator in target.get('initiators') or []:
        word = 'initiator-name' if initiator.startswith(('iqn.', 'eui.', 'naa.')) else 'initiator-address'
        lines.append('\t%s %s' % (word, _value(initiator)))
    for key, word in (('chap', 'incominguser'), ('mutual_chap', 'outgoinguser')):
        account = target.get(key)
        if account:
            password = MASK if mask_secrets else _value(account['password'])
            lines.append('\t%s %s %s' % (word, _value(account['user']), password))
    for name, value in sorted((target.get('attributes') or {}).items()):
        if name in PERSISTENT_ATTRIBUTES:
            lines.append('\t%s %s' % (_value(name), _value(value)))
    lines.append('</target>')
    return '\n'.join(lines) + '\n'


def parse(text):
    """Read back a file written by render(): the target dict, or None for no/unknown content."""
    if not text:
        return None
    target = None
    lun = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        match = re.match(r'^<target (\S+)>$', line)
        if match:
            target = {'iqn': match.group(1), 'luns': [], 'initiators': [], 'chap': None, 'mutual_chap': None,
                      'attributes': {}}
            continue
        if target is None:
            continue
        match = re.match(r'^<backing-store (\S+)>$', line)
        if match:
            lun = {'path': match.group(1), 'lun': None, 'serial': None, 'vendor': None, 'product': None,
                   'readonly': False, 'write_cache': None, 'bstype': None, 'bsoflags': None, 'block_size': 512}
            target['luns'].append(lun)
            continue
        if line == '</backing-store>':
            lun = None
            continue
        if line == '</target>':
            break
        word, _sep, rest = line.partition(' ')
        if lun is not None:
            key = {'lun': 'lun', 'scsi_sn': 'serial', 'vendor_id': 'vendor', 'product_id': 'product',
                   'bs-type': 'bstype', 'bsoflags': 'bsoflags', 'block-size': 'block_size',
                   'readonly': 'readonly', 'write-cache': 'write_cache'}.get(word)
            if key in ('lun', 'block_size'):
                lun[key] = int(rest)
            elif key == 'readonly':
                lun[key] = rest == '1'
            elif key == 'write_cache':
                lun[key] = rest == 'on'
            elif key:
                lun[key] = rest
        elif word in ('initiator-name', 'initiator-address'):
            target['initiators'].append(rest)
        elif word in ('incominguser', 'outgoinguser'):
            user, _sep, password = rest.partition(' ')
            target['chap' if word == 'incominguser' else 'mutual_chap'] = {'user': user, 'password': password}
        else:
            target['attributes'][word] = rest
    return target
