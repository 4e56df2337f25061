#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) pvesan.storage contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pacemaker_cib
short_description: Declare the sections of the Pacemaker cluster configuration (CIB) a role owns
version_added: 0.1.0
description:
  - Makes the Pacemaker cluster configuration (the C(<configuration>) of the CIB) contain the
    sections given in O(configuration), with Pacemaker's own tools doing the work. The live CIB
    is read with C(cibadmin --query), the desired CIB is compared with it by C(crm_diff), checked
    as a whole by C(crm_verify), and only the difference is pushed with C(cibadmin --patch).
  - Ownership semantics. Each of C(resources), C(constraints), C(rsc_defaults), C(op_defaults)
    and C(fencing-topology) present in O(configuration) B(replaces) that section of the live CIB
    wholesale; whatever the live section has beyond it is removed. Sections not given are left
    alone.
  - C(crm_config) is merged by C(cluster_property_set) id instead. Each given set replaces the live
    set with the same id (or is added); other live sets stay, e.g. Pacemaker's own
    C(cib-bootstrap-options). Properties Pacemaker maintains itself (C(dc-version),
    C(cluster-infrastructure), C(cluster-name), C(have-watchdog), C(last-lrm-refresh)) are kept
    when a given set replaces a live set that has them.
  - C(nodes) and C(status) are never touched.
  - Nothing is pushed when C(crm_verify) reports an error in the desired CIB; its warnings are
    returned in RV(verify_warnings) and shown as warnings.
  - Values of the nvpairs named in O(secret_names) (fence device passwords) are masked in the
    diff, the patch, messages and every other returned value, and in what the module logs.
author:
  - pvesan.storage developers (@pvesan)
requirements:
  - Pacemaker's command line tools C(cibadmin), C(crm_diff) and C(crm_verify) (Debian
    C(pacemaker-cli-utils), RHEL C(pacemaker-cli)) on the target host, Pacemaker 2.0 or later.
attributes:
  check_mode:
    support: full
    description: Reads and verifies, returns the patch it would push, pushes nothing.
  diff_mode:
    support: full
    description: Shows the C(<configuration>) (without C(nodes)) before and after, secrets masked.
options:
  configuration:
    description:
      - XML text of a C(<configuration>) element whose children are any of C(crm_config),
        C(resources), C(constraints), C(rsc_defaults), C(op_defaults) and C(fencing-topology)
        (each at most once), in Pacemaker's CIB syntax.
      - Not a whole C(<cib>); other children (C(nodes), C(status), C(tags), ...) are refused.
      - An empty section removes everything in it, e.g. C(<constraints/>) removes all constraints.
    type: str
    required: true
  cib_file:
    description:
      - Work on this CIB file instead of the running cluster. The module sets C(CIB_file) for
        C(cibadmin), C(crm_diff) and C(crm_verify), Pacemaker's offline mode, e.g. to build a
        configuration before the cluster runs. The file must exist (C(cibadmin --empty > FILE)
        makes one).
    type: path
  secret_names:
    description:
      - Names of nvpairs (instance attributes and meta attributes anywhere in the CIB) whose values
        are secrets. Matched case-insensitively. Their values never appear in the module's result
        or log.
    type: list
    elements: str
    default: [password, passwd, secret, community, auth_token, token]
notes:
  - Write each cluster property into one set only. Pacemaker reads C(cib-bootstrap-options) first,
    so a property set there (as C(pcs property set) does) wins over the same property in a set of
    your own.
  - The patch is computed against the CIB read at the start; a concurrent change to the same
    elements between read and push is overwritten by the push.
  - C(crm_verify) also reports warnings about the cluster's state (failed actions, unclean nodes),
    not only about the configuration.
seealso:
  - name: Pacemaker Explained
    description: The CIB syntax of resources, constraints and cluster options.
    link: https://clusterlabs.org/projects/pacemaker/doc/2.1/Pacemaker_Explained/html/
  - module: community.general.pacemaker_resource
"""

EXAMPLES = r"""
- name: Storage HA - a floating IP with the volume service, fenced by IPMI
  pvesan.storage.pacemaker_cib:
    configuration: |
      <configuration>
        <crm_config>
          <cluster_property_set id="pvesan-options">
            <nvpair id="pvesan-options-stonith-enabled" name="stonith-enabled" value="true"/>
            <nvpair id="pvesan-options-no-quorum-policy" name="no-quorum-policy" value="stop"/>
          </cluster_property_set>
        </crm_config>
        <resources>
          <primitive id="fence-storage1" class="stonith" type="fence_ipmilan">
            <instance_attributes id="fence-storage1-ia">
              <nvpair id="fence-storage1-ip" name="ip" value="10.0.0.11"/>
              <nvpair id="fence-storage1-username" name="username" value="admin"/>
              <nvpair id="fence-storage1-password" name="password" value="{{ ipmi_password }}"/>
              <nvpair id="fence-storage1-pcmk_host_list" name="pcmk_host_list" value="storage1"/>
            </instance_attributes>
          </primitive>
          <group id="san">
            <primitive id="san-ip" class="ocf" provider="heartbeat" type="IPaddr2">
              <instance_attributes id="san-ip-ia">
                <nvpair id="san-ip-ip" name="ip" value="192.0.2.10"/>
                <nvpair id="san-ip-cidr_netmask" name="cidr_netmask" value="24"/>
              </instance_attributes>
              <operations>
                <op id="san-ip-monitor" name="monitor" interval="10s"/>
              </operations>
            </primitive>
            <primitive id="san-service" class="systemd" type="pvesan-service"/>
          </group>
        </resources>
        <rsc_defaults>
          <meta_attributes id="rsc-options">
            <nvpair id="rsc-options-migration-threshold" name="migration-threshold" value="3"/>
          </meta_attributes>
        </rsc_defaults>
      </configuration>

- name: Build a configuration in a file before the cluster runs
  pvesan.storage.pacemaker_cib:
    cib_file: /root/cib-staging.xml
    configuration: "{{ lookup('ansible.builtin.template', 'cib-configuration.xml.j2') }}"
"""

RETURN = r"""
patch:
  description:
    - The difference pushed (or, in check mode, that would be pushed), computed by
      C(crm_diff --no-version) and re-indented with secret values masked.
  returned: changed
  type: str
  sample: |
    <diff format="2">
      <change operation="modify" path="/cib/configuration/resources/primitive[@id='san-ip']/instance_attributes[@id='san-ip-ia']/nvpair[@id='san-ip-ip']">
        <change-list>
          <change-attr name="value" operation="set" value="192.0.2.20"/>
        </change-list>
        <change-result>
          <nvpair id="san-ip-ip" name="ip" value="192.0.2.20"/>
        </change-result>
      </change>
    </diff>
verify_warnings:
  description: The warnings C(crm_verify) printed for the desired CIB (only checked when something changes).
  returned: always
  type: list
  elements: str
  sample: ["warning: Support for stonith-action of 'poweroff' is deprecated and will be removed in a future release (use 'off' instead)"]
"""

import copy
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.common.text.converters import to_native

# The sections the caller owns and replaces wholesale; crm_config is merged by property set.
REPLACED_SECTIONS = ('resources', 'constraints', 'rsc_defaults', 'op_defaults', 'fencing-topology')
MANAGED_SECTIONS = ('crm_config',) + REPLACED_SECTIONS
DEFAULT_SECRET_NAMES = ['password', 'passwd', 'secret', 'community', 'auth_token', 'token']
# Written by Pacemaker's controller, not by people: dropping them from a replaced set would make
# the controller write them back and every later run a change.
PACEMAKER_PROPERTIES = ('dc-version', 'cluster-infrastructure', 'cluster-name', 'have-watchdog', 'last-lrm-refresh')
MASK = '********'
TOOLS = ('cibadmin', 'crm_diff', 'crm_verify')

_NVPAIR_TAG = re.compile(r'<nvpair\b[^>]*>', re.S)
_ATTR = re.compile(r'''\b(name|value)\s*=\s*(?:"([^"]*)"|'([^']*)')''')
_NVPAIR_PATH_ID = re.compile(r"""nvpair\[@id=['"]([^'"]+)['"]\]$""")
_LOG_LOCATION = re.compile(r'^\([\w.:-]+\)\s+')
_FILE_LINE = re.compile(r'^\S+?:\d+:\s*')


class CibError(Exception):
    """Bad input or a failed step; the message says what to do."""


# --- the given configuration --------------------------------------------------------------
def _parser():
    # Comments are kept: the live CIB may have some, and a desired CIB without them would make
    # crm_diff report their deletion, a change on every run.
    return ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))


def _is_element(node):
    return isinstance(node.tag, str)


def parse_configuration(text):
    """The <configuration> element of ``text``, checked; raises CibError with a clear message."""
    if not (text or '').strip():
        raise CibError('configuration is empty: give a <configuration> element with the sections to manage')
    if re.search(r'<!(DOCTYPE|ENTITY)', text):
        # expat expands internal entities; a CIB needs none, so refuse them outright.
        raise CibError('configuration must not contain a DOCTYPE or ENTITY declaration')
    try:
        root = ET.fromstring(text, parser=_parser())
    except ET.ParseError as e:
        raise CibError('configuration is not well-formed XML: %s' % to_native(e))
    if root.tag == 'cib':
        raise CibError('configuration is a whole <cib>: give only its <configuration> element with the sections '
                       'to manage (%s); nodes and status are never managed' % ', '.join(MANAGED_SECTIONS))
    if root.tag != 'configuration':
        raise CibError('configuration must be a <configuration> element, not <%s>' % root.tag)
    seen = set()
    for child in root:
        if not _is_element(child):
            continue
        if child.tag not in MANAGED_SECTIONS:
            raise CibError('configuration has an unknown child <%s>: only %s can be managed (nodes and status never are)'
                           % (child.tag, ', '.join(MANAGED_SECTIONS)))
        if child.tag in seen:
            raise CibError('configuration has more than one <%s>' % child.tag)
        seen.add(child.tag)
        if child.tag == 'crm_config':
            _check_crm_config(child)
    return root


def _check_crm_config(crm_config):
    ids = set()
    for child in crm_config:
        if not _is_element(child):
            continue
        if child.tag != 'cluster_property_set':
            raise CibError('crm_config may only contain cluster_property_set elements, not <%s>' % child.tag)
        set_id = child.get('id')
        if not set_id:
            raise CibError('every cluster_property_set in crm_config needs an id: sets are merged by id')
        if set_id in ids:
            raise CibError('crm_config has two cluster_property_set elements with id "%s"' % set_id)
        ids.add(set_id)


# --- building the desired CIB ---------------------------------------------------------------
def parse_cib(text):
    try:
        root = ET.fromstring(text, parser=_parser())
    except ET.ParseError as e:
        raise CibError('the live CIB is not well-formed XML: %s' % to_native(e))
    if root.tag != 'cib' or root.find('configuration') is None:
        raise CibError('the live CIB has no <cib><configuration>: is this a Pacemaker CIB?')
    return root


def _replace_child(parent, old, new):
    """Put ``new`` where ``old`` is (its position kept, so crm_diff sees no move), or at the end."""
    if old is None:
        parent.append(new)
        return
    index = list(parent).index(old)
    parent.remove(old)
    parent.insert(index, new)


def _merge_property_set(old, new):
    if old is None:
        return new
    given = set(nv.get('name') for nv in new.iter('nvpair'))
    for nv in old.findall('nvpair'):
        if nv.get('name') in PACEMAKER_PROPERTIES and nv.get('name') not in given:
            new.append(copy.deepcopy(nv))
    return new


def desired_cib(live, conf):
    """A copy of the live <cib> with the sections of ``conf`` replaced or merged."""
    desired = copy.deepcopy(live)
    configuration = desired.find('configuration')
    for section in conf:
        if not _is_element(section):
            continue
        section = copy.deepcopy(section)
        current = configuration.find(section.tag)
        if section.tag != 'crm_config':
            _replace_child(configuration, current, section)
            continue
        if current is None:
            current = ET.Element('crm_config')
            configuration.insert(0, current)
        for prop_set in section:
            if not _is_element(prop_set):
                continue
            old = None
            for candidate in current.findall('cluster_property_set'):
                if candidate.get('id') == prop_set.get('id'):
                    old = candidate
                    break
            _replace_child(current, old, _merge_property_set(old, prop_set))
    return desired


# --- secrets --------------------------------------------------------------------------------
def _secret_set(names):
    return set(n.lower() for n in names or [])


def secret_values(root, names):
    """Values of the secret nvpairs under ``root`` (an Element or None)."""
    names = _secret_set(names)
    if root is None:
        return set()
    return set(nv.get('value') for nv in root.iter('nvpair')
               if (nv.get('name') or '').lower() in names and nv.get('value'))


def secret_ids(root, names):
    names = _secret_set(names)
    return set(nv.get('id') for nv in root.iter('nvpair') if (nv.get('name') or '').lower() in names and nv.get('id'))


def secret_values_in_text(text, names):
    """Secret values in XML text that may not even parse; used before the text is checked."""
    try:
        return secret_values(ET.fromstring(text or '', parser=_parser()), names)
    except (ET.ParseError, ValueError):
        pass
    names = _secret_set(names)
    values = set()
    for tag in _NVPAIR_TAG.findall(text or ''):
        attrs = {}
        for match in _ATTR.finditer(tag):
            attrs[match.group(1)] = match.group(2) if match.group(2) is not None else match.group(3)
        if attrs.get('name', '').lower() in names and attrs.get('value'):
            values.add(attrs['value'])
            values.add(_unescape(attrs['value']))
    return values


def _unescape(value):
    for entity, char in (('&lt;', '<'), ('&gt;', '>'), ('&quot;', '"'), ('&apos;', "'"), ('&amp;', '&')):
        value = value.replace(entity, char)
    return value


def _escapes(value):
    """The ways ``value`` can appear in XML text as well as itself."""
    amp = value.replace('&', '&amp;')
    return set([value, amp, amp.replace('<', '&lt;').replace('>', '&gt;'),
                amp.replace('<', '&lt;').replace('>', '&gt;').replace('"', '&quot;').replace("'", '&apos;')])


def secret_forms(values):
    """Every secret value as itself and XML-escaped, the ways it can appear in text."""
    forms = set()
    for value in values:
        if value:
            forms |= _escapes(value)
    return forms


def mask_text(text, values):
    """``text`` with every secret value (also XML-escaped) replaced by the mask."""
    if not text:
        return text
    for form in sorted(secret_forms(values), key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


def mask_tree(root, names, ids=()):
    """Mask secret nvpairs (by name) and patch attribute changes of secret nvpairs (by id), in place."""
    names = _secret_set(names)
    for nv in root.iter('nvpair'):
        if (nv.get('name') or '').lower() in names and nv.get('value') is not None:
            nv.set('value', MASK)
    # crm_diff's format 2: <change operation="modify" path=".../nvpair[@id='X']"><change-list>
    # <change-attr name="value" value="..."/> names the nvpair by id only.
    for change in root.iter('change'):
        match = _NVPAIR_PATH_ID.search(change.get('path') or '')
        if match and match.group(1) in ids:
            for attr in change.iter('change-attr'):
                if attr.get('name') == 'value' and attr.get('value') is not None:
                    attr.set('value', MASK)
    return root


# --- output ---------------------------------------------------------------------------------
def _indent(elem, level=0):
    # ET.indent needs Python 3.9; modules here run on 3.8.
    children = list(elem)
    if not children:
        if _is_element(elem) and elem.text is not None and not elem.text.strip():
            elem.text = None
        return
    pad = '\n' + '  ' * level
    if elem.text is None or not elem.text.strip():
        elem.text = pad + '  '
    for child in children:
        _indent(child, level + 1)
        if child.tail is None or not child.tail.strip():
            child.tail = pad + '  '
    if children[-1].tail is None or not children[-1].tail.strip():
        children[-1].tail = pad


def pretty(elem):
    elem = copy.deepcopy(elem)
    _indent(elem)
    elem.tail = None
    return ET.tostring(elem, encoding='unicode') + '\n'


def configuration_view(cib, names, values):
    """The <configuration> of ``cib`` without nodes, secrets masked, pretty-printed."""
    conf = copy.deepcopy(cib.find('configuration'))
    for nodes in conf.findall('nodes'):
        conf.remove(nodes)
    return mask_text(pretty(mask_tree(conf, names)), values)


def mask_patch(patch, names, ids, values):
    try:
        root = ET.fromstring(patch, parser=_parser())
    except ET.ParseError:
        return mask_text(patch, values)
    return mask_text(pretty(mask_tree(root, names, ids)), values)


def verify_report(rc, out, err):
    """(errors, warnings) from crm_verify -VV: lists of lines, errors None when it passed.

    crm_verify exits 78 for errors and also for some warnings ("Warnings found during check:
    config may not be valid"); only its summary line tells them apart.
    """
    lines = []
    for line in (err + '\n' + out).splitlines():
        line = _FILE_LINE.sub('', _LOG_LOCATION.sub('', line.strip()))
        if line and line not in lines and not line.startswith('-V may provide'):
            lines.append(line)
    warnings = [line for line in lines if line.startswith('warning:')]
    errors = [line for line in lines if 'error' in line.lower() and not line.startswith('warning:')]
    only_warnings = 'Warnings found during check' in out + err and not errors
    if rc == 0 or only_warnings:
        return None, warnings
    return [line for line in lines if 'Warnings found during check' not in line] or ['exit status %d' % rc], warnings


# --- the module -----------------------------------------------------------------------------
class CibModule(AnsibleModule):
    """AnsibleModule that keeps the secret values of ``configuration`` out of its log.

    ``configuration`` cannot be no_log (the diff would be hidden), so its secret nvpair values are
    registered as no_log values before the invocation is logged to the host's journal.
    """

    def log(self, msg, log_args=None):
        params = getattr(self, 'params', None) or {}
        self.no_log_values.update(secret_forms(secret_values_in_text(params.get('configuration'),
                                                                     params.get('secret_names'))))
        if log_args:
            log_args = remove_values(log_args, self.no_log_values)
        super(CibModule, self).log(remove_values(msg, self.no_log_values), log_args=log_args)


def _oneline(text):
    return '; '.join(line.strip() for line in (text or '').splitlines() if line.strip())


class Cib(object):
    """Runs Pacemaker's tools in the C locale (their messages are parsed) on a private temp dir."""

    def __init__(self, module, tmpdir):
        self.module = module
        self.tmpdir = tmpdir
        self.bins = {}
        for tool in TOOLS:
            self.bins[tool] = module.get_bin_path(tool)
            if not self.bins[tool]:
                raise CibError('%s not found: install Pacemaker\'s command line tools (pacemaker-cli-utils on '
                               'Debian, pacemaker-cli on RHEL)' % tool)

    def run(self, argv):
        return self.module.run_command([self.bins[argv[0]]] + argv[1:])

    def write(self, name, text):
        path = os.path.join(self.tmpdir, name)
        with open(path, 'w') as f:
            f.write(text)
        return path

    def query(self):
        rc, out, err = self.run(['cibadmin', '--query'])
        if rc != 0:
            if self.module.params['cib_file']:
                hint = 'Check that %s is a CIB file (cibadmin --empty makes one).' % self.module.params['cib_file']
            else:
                hint = ('Is Pacemaker running on this host? Start the cluster (systemctl start corosync pacemaker, '
                        'or pcs cluster start) and check it with pcs status or crm_mon -1; to prepare a '
                        'configuration without a cluster, use cib_file.')
            raise CibError('cibadmin --query failed (exit status %d): %s. %s' % (rc, _oneline(err or out), hint))
        return out

    def diff(self, live_path, desired_path):
        rc, out, err = self.run(['crm_diff', '--original', live_path, '--new', desired_path, '--no-version'])
        if rc == 0:
            return None
        if rc == 1 and out.strip():
            return out
        raise CibError('crm_diff failed (exit status %d): %s' % (rc, _oneline(err or out)))

    def verify(self, path):
        # -VV: without -V crm_verify prints only "config not valid"; errors need -V, warnings -VV.
        return verify_report(*self.run(['crm_verify', '-VV', '--xml-file', path]))

    def patch(self, path):
        rc, out, err = self.run(['cibadmin', '--patch', '--xml-file', path])
        if rc != 0:
            raise CibError('cibadmin --patch failed (exit status %d): %s' % (rc, _oneline(err or out)))


def verify_copy(desired):
    cib = copy.deepcopy(desired)
    if cib.get('have-quorum') is None:
        # A CIB file that never ran in a cluster has no quorum state, and crm_verify then warns
        # "Fencing and resource management disabled due to lack of quorum" about every
        # configuration; check it as a quorate cluster would run it. A live CIB has the attribute.
        cib.set('have-quorum', '1')
    return cib


def apply(module, result):
    p = module.params
    names = p['secret_names']
    conf = parse_configuration(p['configuration'])
    tmpdir = tempfile.mkdtemp(prefix='pacemaker_cib.')
    try:
        cib = Cib(module, tmpdir)
        live_text = cib.query()
        live = parse_cib(live_text)
        desired = desired_cib(live, conf)
        values = secret_values(live, names) | secret_values(desired, names) | secret_values(conf, names)
        # Anything returned, including the invocation's module_args, is masked by AnsibleModule too.
        module.no_log_values.update(secret_forms(values))
        ids = secret_ids(live, names) | secret_ids(desired, names)
        live_path = cib.write('live.xml', live_text)
        desired_path = cib.write('desired.xml', ET.tostring(desired, encoding='unicode'))
        patch = cib.diff(live_path, desired_path)
        if patch is None:
            return
        result['changed'] = True
        result['patch'] = mask_patch(patch, names, ids, values)
        if module._diff:
            result['diff'] = dict(before_header='CIB configuration', after_header='CIB configuration',
                                  before=configuration_view(live, names, values),
                                  after=configuration_view(desired, names, values))
        errors, warnings = cib.verify(cib.write('verify.xml', ET.tostring(verify_copy(desired), encoding='unicode')))
        result['verify_warnings'] = [mask_text(w, values) for w in warnings]
        for warning in result['verify_warnings']:
            module.warn('crm_verify: %s' % warning)
        if errors is not None:
            raise CibError('crm_verify found errors in the desired CIB, nothing was pushed: %s'
                           % mask_text('; '.join(errors), values))
        if not module.check_mode:
            cib.patch(cib.write('patch.xml', patch))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def main():
    module = CibModule(
        argument_spec=dict(
            # Not no_log, which would hide the whole diff; its secret values are masked instead.
            configuration=dict(type='str', required=True),
            cib_file=dict(type='path'),
            secret_names=dict(type='list', elements='str', default=list(DEFAULT_SECRET_NAMES), no_log=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    # Also when the invocation was not logged (no_log tasks); CibModule.log does it before logging.
    module.no_log_values.update(secret_forms(secret_values_in_text(p['configuration'], p['secret_names'])))
    # The C locale: crm_verify's and cibadmin's messages are parsed.
    env = dict(LANG='C', LC_ALL='C', LC_MESSAGES='C')
    result = dict(changed=False, verify_warnings=[])
    if p['cib_file']:
        p['cib_file'] = os.path.abspath(p['cib_file'])
        if not os.path.isfile(p['cib_file']):
            module.fail_json(msg='cib_file %s does not exist: create it with cibadmin --empty > %s'
                             % (p['cib_file'], p['cib_file']), **result)
        env['CIB_file'] = p['cib_file']
    module.run_command_environ_update = env
    try:
        apply(module, result)
    except CibError as e:
        # Nothing was pushed: a failed cibadmin --patch changes nothing either.
        result['changed'] = False
        module.fail_json(msg=to_native(e), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
