# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pacemaker_cib: merge semantics, masking, input errors and the flow of main() with the
Pacemaker tools faked. The real cibadmin/crm_diff/crm_verify run in the integration target."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import xml.etree.ElementTree as ET

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pvesan.storage.plugins.modules import pacemaker_cib as mod

NAMES = mod.DEFAULT_SECRET_NAMES

LIVE = """<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.9" epoch="7" num_updates="3" admin_epoch="0" have-quorum="1">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="cib-bootstrap-options-have-watchdog" name="have-watchdog" value="false"/>
        <nvpair id="cib-bootstrap-options-dc-version" name="dc-version" value="2.1.5-a3f44794f94"/>
        <nvpair id="cib-bootstrap-options-cluster-infrastructure" name="cluster-infrastructure" value="corosync"/>
        <nvpair id="cib-bootstrap-options-cluster-name" name="cluster-name" value="san"/>
      </cluster_property_set>
      <cluster_property_set id="pvesan-options">
        <nvpair id="pvesan-options-stonith-enabled" name="stonith-enabled" value="false"/>
      </cluster_property_set>
    </crm_config>
    <nodes>
      <node id="1" uname="storage1"/>
      <!-- hand-written -->
    </nodes>
    <resources>
      <primitive id="fence-storage1" class="stonith" type="fence_ipmilan">
        <instance_attributes id="fence-storage1-ia">
          <nvpair id="fence-storage1-password" name="password" value="old-s3cret"/>
        </instance_attributes>
      </primitive>
      <primitive id="stray" class="ocf" provider="heartbeat" type="Dummy"/>
    </resources>
    <constraints>
      <rsc_location id="loc-stray" rsc="stray" node="storage1" score="100"/>
    </constraints>
    <op_defaults>
      <meta_attributes id="op-options">
        <nvpair id="op-options-timeout" name="timeout" value="30s"/>
      </meta_attributes>
    </op_defaults>
  </configuration>
  <status>
    <node_state id="1" uname="storage1" in_ccm="true" crmd="online"/>
  </status>
</cib>
"""

CONF = """<configuration>
  <crm_config>
    <cluster_property_set id="pvesan-options">
      <nvpair id="pvesan-options-stonith-enabled" name="stonith-enabled" value="true"/>
      <nvpair id="pvesan-options-no-quorum-policy" name="no-quorum-policy" value="stop"/>
    </cluster_property_set>
    <cluster_property_set id="pvesan-extra">
      <nvpair id="pvesan-extra-symmetric" name="symmetric-cluster" value="true"/>
    </cluster_property_set>
  </crm_config>
  <resources>
    <primitive id="fence-storage1" class="stonith" type="fence_ipmilan">
      <instance_attributes id="fence-storage1-ia">
        <nvpair id="fence-storage1-password" name="password" value="s3cret&amp;more"/>
      </instance_attributes>
    </primitive>
  </resources>
  <rsc_defaults>
    <meta_attributes id="rsc-options">
      <nvpair id="rsc-options-migration-threshold" name="migration-threshold" value="3"/>
    </meta_attributes>
  </rsc_defaults>
</configuration>
"""

# Recorded from crm_verify -VV --xml-file (Pacemaker 2.1.5, Debian 12) on CIBs with the problem named.
VERIFY_DANGLING_REF = (
    78, '',
    '/tmp/pacemaker_cib.x/verify.xml:59: element rsc_colocation: validity error : IDREF attribute rsc references '
    'an unknown ID "nothere"\n'
    '/tmp/pacemaker_cib.x/verify.xml:59: element rsc_colocation: validity error : IDREF attribute rsc references '
    'an unknown ID "nothere"\n'
    '(main) \terror: CIB did not pass schema validation\n'
    'crm_verify: Errors found during check: config not valid\n')
VERIFY_DEPRECATED = (
    78, '',
    "(unpack_config) \twarning: Support for stonith-action of 'poweroff' is deprecated and will be removed in a "
    "future release (use 'off' instead)\n"
    'crm_verify: Warnings found during check: config may not be valid\n')
VERIFY_INTERVAL = (
    0, '',
    "(crm_parse_interval_spec) \twarning: Using 0 instead of 'abc'\n"
    "(crm_parse_interval_spec) \twarning: Using 0 instead of 'abc'\n")
VERIFY_NO_STONITH = (
    78, '',
    '(unpack_resources) \terror: Resource start-up disabled since no STONITH resources have been defined\n'
    '(unpack_resources) \terror: Either configure some or disable STONITH with the stonith-enabled option\n'
    'crm_verify: Errors found during check: config not valid\n')


def section(root, path):
    return ET.tostring(root.find(path), encoding='unicode')


def desired(conf=CONF, live=LIVE):
    return mod.desired_cib(mod.parse_cib(live), mod.parse_configuration(conf))


# --- input errors ---------------------------------------------------------------------------
@pytest.mark.parametrize('text, message', [
    ('', 'configuration is empty'),
    ('<configuration><resources></configuration>', 'not well-formed XML: mismatched tag: line 1, column'),
    ('<cib><configuration/></cib>', 'is a whole <cib>: give only its <configuration>'),
    ('<resources/>', 'must be a <configuration> element, not <resources>'),
    ('<configuration><nodes/></configuration>', 'unknown child <nodes>: only crm_config, resources'),
    ('<configuration><status/></configuration>', 'nodes and status never are'),
    ('<configuration><tags/></configuration>', 'unknown child <tags>'),
    ('<configuration><resources/><resources/></configuration>', 'more than one <resources>'),
    ('<configuration><crm_config><nvpair id="a" name="b" value="c"/></crm_config></configuration>',
     'crm_config may only contain cluster_property_set elements, not <nvpair>'),
    ('<configuration><crm_config><cluster_property_set/></crm_config></configuration>',
     'every cluster_property_set in crm_config needs an id'),
    ('<configuration><crm_config><cluster_property_set id="a"/><cluster_property_set id="a"/></crm_config>'
     '</configuration>', 'two cluster_property_set elements with id "a"'),
    ('<!DOCTYPE x [<!ENTITY a "b">]><configuration/>', 'DOCTYPE or ENTITY'),
])
def test_bad_configuration_is_refused(text, message):
    with pytest.raises(mod.CibError) as e:
        mod.parse_configuration(text)
    assert message in str(e.value)


def test_comments_and_all_sections_accepted():
    root = mod.parse_configuration('<?xml version="1.0"?><!-- ours --><configuration><!-- x -->'
                                   + ''.join('<%s/>' % s for s in mod.MANAGED_SECTIONS) + '</configuration>')
    assert [c.tag for c in root if isinstance(c.tag, str)] == list(mod.MANAGED_SECTIONS)


def test_live_cib_must_be_a_cib():
    with pytest.raises(mod.CibError, match='no <cib><configuration>'):
        mod.parse_cib('<configuration/>')
    with pytest.raises(mod.CibError, match='live CIB is not well-formed'):
        mod.parse_cib('Could not connect')


# --- merge semantics --------------------------------------------------------------------------
def test_given_sections_replace_the_live_ones_wholesale():
    cib = desired()
    resources = cib.find('configuration/resources')
    assert [p.get('id') for p in resources] == ['fence-storage1']  # the stray primitive is gone
    assert cib.find(".//nvpair[@id='fence-storage1-password']").get('value') == 's3cret&more'
    assert cib.find('configuration/rsc_defaults/meta_attributes').get('id') == 'rsc-options'


def test_absent_sections_nodes_and_status_are_left_alone():
    live = mod.parse_cib(LIVE)
    cib = desired()
    for path in ('configuration/constraints', 'configuration/op_defaults', 'configuration/nodes', 'status'):
        assert section(cib, path) == section(live, path)
    assert cib.attrib == live.attrib
    # the hand-written comment in nodes survives, or crm_diff would delete it on every run
    assert '<!-- hand-written -->' in section(cib, 'configuration/nodes')


def test_sections_keep_their_position_and_new_ones_are_appended():
    tags = [c.tag for c in desired().find('configuration')]
    assert tags == ['crm_config', 'nodes', 'resources', 'constraints', 'op_defaults', 'rsc_defaults']


def test_empty_section_empties_it():
    cib = desired('<configuration><constraints/></configuration>')
    assert list(cib.find('configuration/constraints')) == []
    assert len(list(cib.find('configuration/resources'))) == 2


def test_crm_config_is_merged_by_property_set_id():
    sets = desired().find('configuration/crm_config')
    assert [s.get('id') for s in sets] == ['cib-bootstrap-options', 'pvesan-options', 'pvesan-extra']
    assert section(desired(), "configuration/crm_config/cluster_property_set[@id='cib-bootstrap-options']") == \
        section(mod.parse_cib(LIVE), "configuration/crm_config/cluster_property_set[@id='cib-bootstrap-options']")
    ours = sets.find("cluster_property_set[@id='pvesan-options']")
    assert [(nv.get('name'), nv.get('value')) for nv in ours] == [('stonith-enabled', 'true'), ('no-quorum-policy', 'stop')]


def test_replacing_bootstrap_options_keeps_what_pacemaker_maintains():
    conf = ('<configuration><crm_config><cluster_property_set id="cib-bootstrap-options">'
            '<nvpair id="cbo-stonith" name="stonith-enabled" value="true"/>'
            '<nvpair id="cbo-name" name="cluster-name" value="renamed"/>'
            '</cluster_property_set></crm_config></configuration>')
    bootstrap = desired(conf).find("configuration/crm_config/cluster_property_set[@id='cib-bootstrap-options']")
    assert [(nv.get('name'), nv.get('value')) for nv in bootstrap] == [
        ('stonith-enabled', 'true'), ('cluster-name', 'renamed'), ('have-watchdog', 'false'),
        ('dc-version', '2.1.5-a3f44794f94'), ('cluster-infrastructure', 'corosync')]


def test_missing_crm_config_is_created():
    live = '<cib><configuration><nodes/><resources/><constraints/></configuration><status/></cib>'
    cib = desired('<configuration><crm_config><cluster_property_set id="a"/></crm_config></configuration>', live)
    assert [c.tag for c in cib.find('configuration')][0] == 'crm_config'


def test_the_given_tree_is_not_modified():
    conf = mod.parse_configuration(CONF)
    before = ET.tostring(conf)
    mod.desired_cib(mod.parse_cib(LIVE), conf)
    assert ET.tostring(conf) == before


# --- masking --------------------------------------------------------------------------------
def test_secret_values_by_name_case_insensitive():
    root = mod.parse_cib(LIVE)
    assert mod.secret_values(root, NAMES) == {'old-s3cret'}
    assert mod.secret_values(root, ['PASSWORD']) == {'old-s3cret'}
    assert mod.secret_values(root, ['passwd']) == set()
    assert mod.secret_ids(root, NAMES) == {'fence-storage1-password'}


def test_secret_values_in_text_that_does_not_parse():
    text = '<configuration><nvpair value=\'p&amp;w\' id="x" name="Password"/><nvpair name="ip" value="1"/><broken'
    assert mod.secret_values_in_text(text, NAMES) == {'p&amp;w', 'p&w'}
    assert mod.secret_values_in_text(CONF, NAMES) == {'s3cret&more'}


def test_mask_text_covers_xml_escaped_forms():
    text = 'value="s3cret&amp;more" and s3cret&more and &quot;x'
    assert mod.mask_text(text, {'s3cret&more', ''}) == 'value="********" and ******** and &quot;x'


def test_mask_patch_by_name_and_by_id():
    patch = """<diff format="2">
  <change operation="modify" path="/cib/configuration/resources/primitive[@id='f']/instance_attributes[@id='f-ia']/nvpair[@id='f-pw']">
    <change-list>
      <change-attr name="value" operation="set" value="n3w"/>
    </change-list>
    <change-result>
      <nvpair id="f-pw" name="passwd" value="n3w"/>
    </change-result>
  </change>
  <change operation="modify" path="/cib/configuration/resources/primitive[@id='f']/instance_attributes[@id='f-ia']/nvpair[@id='f-ip']">
    <change-list>
      <change-attr name="value" operation="set" value="10.0.0.12"/>
    </change-list>
  </change>
</diff>
"""
    masked = mod.mask_patch(patch, NAMES, {'f-pw'}, set())
    assert 'n3w' not in masked
    assert masked.count(mod.MASK) == 2
    assert 'value="10.0.0.12"' in masked
    assert mod.mask_patch('not xml n3w', NAMES, set(), {'n3w'}) == 'not xml ' + mod.MASK


def test_configuration_view_masks_and_drops_nodes():
    view = mod.configuration_view(desired(), NAMES, {'s3cret&more'})
    assert 's3cret' not in view and '<nodes' not in view and '<status' not in view
    assert view.startswith('<configuration>\n  <crm_config>\n    <cluster_property_set id="cib-bootstrap-options">')
    assert 'name="password" value="********"' in view


# --- crm_verify output ----------------------------------------------------------------------
def test_verify_errors_fail_deduplicated_without_temp_paths():
    errors, warnings = mod.verify_report(*VERIFY_DANGLING_REF)
    assert errors == ['element rsc_colocation: validity error : IDREF attribute rsc references an unknown ID "nothere"',
                      'error: CIB did not pass schema validation',
                      'crm_verify: Errors found during check: config not valid']
    assert warnings == []
    errors = mod.verify_report(*VERIFY_NO_STONITH)[0]
    assert errors[0] == 'error: Resource start-up disabled since no STONITH resources have been defined'


def test_verify_warnings_exit_78_but_pass():
    errors, warnings = mod.verify_report(*VERIFY_DEPRECATED)
    assert errors is None
    assert warnings == ["warning: Support for stonith-action of 'poweroff' is deprecated and will be removed in a "
                        "future release (use 'off' instead)"]


def test_verify_warnings_with_exit_0():
    assert mod.verify_report(*VERIFY_INTERVAL) == (None, ["warning: Using 0 instead of 'abc'"])
    assert mod.verify_report(0, '', '') == (None, [])


def test_verify_unknown_failure_still_fails():
    assert mod.verify_report(105, '', '') == (['exit status 105'], [])


def test_verify_copy_assumes_quorum_only_when_unknown():
    assert mod.verify_copy(ET.fromstring('<cib/>')).get('have-quorum') == '1'
    assert mod.verify_copy(ET.fromstring('<cib have-quorum="0"/>')).get('have-quorum') == '0'


# --- main() with the tools faked --------------------------------------------------------------
PASSWORD_PATH = ("/cib/configuration/resources/primitive[@id='fence-storage1']"
                 "/instance_attributes[@id='fence-storage1-ia']/nvpair[@id='fence-storage1-password']")
PATCH = """<diff format="2">
  <change operation="modify" path="%s">
    <change-list>
      <change-attr name="value" operation="set" value="s3cret&amp;more"/>
    </change-list>
  </change>
</diff>
""" % PASSWORD_PATH


class FakeTools(object):
    """cibadmin/crm_diff/crm_verify answers; records the calls, the files given and the environment."""

    def __init__(self):
        self.calls = []
        self.env = None
        self.files = {}
        self.answers = {'cibadmin --query': (0, LIVE, ''), 'crm_diff': (1, PATCH, ''), 'crm_verify': (0, '', ''),
                        'cibadmin --patch': (0, '', '')}

    def __call__(self, module, argv, **kwargs):
        self.env = dict(module.run_command_environ_update)
        tool = os.path.basename(argv[0])
        self.calls.append(' '.join([tool] + list(argv[1:])))
        for arg in argv[1:]:
            if os.path.isfile(arg):
                with open(arg) as f:
                    self.files[os.path.basename(arg)] = f.read()
        key = tool if tool != 'cibadmin' else '%s %s' % (tool, argv[1])
        return self.answers[key]

    def tools(self):
        return [c.split()[0] + ('' if not c.startswith('cibadmin') else ' ' + c.split()[1]) for c in self.calls]


@pytest.fixture
def tools(monkeypatch):
    fake = FakeTools()

    def run_command(module, argv, **kwargs):
        return fake(module, argv, **kwargs)

    monkeypatch.setattr(basic.AnsibleModule, 'run_command', run_command)
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', lambda self, name, *a, **kw: '/usr/sbin/' + name)
    return fake


def run(capsys, args, check=False, diff=True):
    with patch_module_args(dict(args, _ansible_check_mode=check, _ansible_diff=diff)):
        with pytest.raises(SystemExit):
            mod.main()
    return json.loads(capsys.readouterr().out)


def test_change_is_verified_then_patched_with_secrets_masked(capsys, tools):
    result = run(capsys, dict(configuration=CONF))
    assert result['changed'] is True
    assert tools.tools() == ['cibadmin --query', 'crm_diff', 'crm_verify', 'cibadmin --patch']
    assert tools.calls[1].endswith('--no-version') and '-VV --xml-file' in tools.calls[2]
    assert tools.env['LC_ALL'] == 'C' and 'CIB_file' not in tools.env
    assert tools.files['patch.xml'] == PATCH  # crm_diff's patch is pushed unchanged
    assert 'have-quorum="1"' in tools.files['verify.xml']
    text = json.dumps(result)
    assert 's3cret' not in text and 'old-s3cret' not in text
    assert 'value="********"' in result['patch'] and 'value="********"' in result['diff']['after']
    assert 'id="stray"' in result['diff']['before'] and 'id="stray"' not in result['diff']['after']


def test_temp_files_are_removed(capsys, tools, monkeypatch, tmp_path):
    monkeypatch.setattr(mod.tempfile, 'tempdir', str(tmp_path))
    run(capsys, dict(configuration=CONF))
    assert os.listdir(str(tmp_path)) == []


def test_no_difference_no_verify_no_patch(capsys, tools):
    tools.answers['crm_diff'] = (0, '', '')
    result = run(capsys, dict(configuration=CONF))
    assert result['changed'] is False and 'diff' not in result and 'patch' not in result
    assert tools.tools() == ['cibadmin --query', 'crm_diff']


def test_check_mode_verifies_but_does_not_patch(capsys, tools):
    result = run(capsys, dict(configuration=CONF), check=True)
    assert result['changed'] is True and result['patch']
    assert tools.tools() == ['cibadmin --query', 'crm_diff', 'crm_verify']


def test_verify_errors_fail_and_push_nothing(capsys, tools):
    tools.answers['crm_verify'] = VERIFY_NO_STONITH
    result = run(capsys, dict(configuration=CONF))
    assert result['failed'] is True and result['changed'] is False
    assert result['msg'].startswith('crm_verify found errors in the desired CIB, nothing was pushed: '
                                    'error: Resource start-up disabled since no STONITH')
    assert 'cibadmin --patch' not in tools.tools()


def test_verify_output_is_masked(capsys, tools):
    tools.answers['crm_verify'] = (
        78, '', "(x) \terror: bad value 's3cret&more'\n(y) \twarning: old-s3cret\n"
        'crm_verify: Errors found during check: config not valid\n')
    result = run(capsys, dict(configuration=CONF))
    assert 's3cret' not in json.dumps(result)
    assert "bad value '********'" in result['msg']


def test_warnings_are_returned_and_shown(capsys, tools):
    tools.answers['crm_verify'] = VERIFY_DEPRECATED
    result = run(capsys, dict(configuration=CONF))
    assert result['changed'] is True
    assert result['verify_warnings'] == [VERIFY_DEPRECATED[2].splitlines()[0].split('\t')[1]]
    # ansible-core 2.19 returns warnings as objects, older versions as strings
    assert "crm_verify: warning: Support for stonith-action of 'poweroff'" in json.dumps(result['warnings'])


def test_cluster_not_running(capsys, tools):
    tools.answers['cibadmin --query'] = (102, '', 'Could not connect to the CIB: Transport endpoint is not connected\n'
                                                  'Init failed, could not perform requested operations\n')
    result = run(capsys, dict(configuration=CONF))
    assert result['msg'].startswith('cibadmin --query failed (exit status 102): Could not connect to the CIB')
    assert 'pcs status' in result['msg'] and 'cib_file' in result['msg']


def test_crm_diff_failure(capsys, tools):
    tools.answers['crm_diff'] = (65, '', 'Could not parse the first XML fragment\n')
    result = run(capsys, dict(configuration=CONF))
    assert result['msg'] == 'crm_diff failed (exit status 65): Could not parse the first XML fragment'


def test_patch_failure(capsys, tools):
    tools.answers['cibadmin --patch'] = (203, '', 'Call cib_apply_diff failed (-203): Update does not conform\n')
    result = run(capsys, dict(configuration=CONF))
    assert result['failed'] is True and result['changed'] is False
    assert 'cibadmin --patch failed (exit status 203)' in result['msg']


def test_bad_xml_runs_nothing_and_masks(capsys, tools):
    result = run(capsys, dict(configuration=CONF.replace('</resources>', '')))
    assert 'not well-formed XML' in result['msg']
    assert tools.calls == []
    assert 's3cret' not in json.dumps(result)


def test_cib_file_sets_the_environment(capsys, tools, tmp_path):
    cib = tmp_path / 'cib.xml'
    cib.write_text(LIVE)
    run(capsys, dict(configuration=CONF, cib_file=str(cib)))
    assert tools.env['CIB_file'] == str(cib)


def test_missing_cib_file(capsys, tools, tmp_path):
    result = run(capsys, dict(configuration=CONF, cib_file=str(tmp_path / 'none.xml')))
    assert 'does not exist: create it with cibadmin --empty >' in result['msg']


def test_missing_tool(capsys, tools, monkeypatch):
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', lambda self, name, *a, **kw: None)
    result = run(capsys, dict(configuration=CONF))
    assert result['msg'].startswith('cibadmin not found: install Pacemaker')


def test_custom_secret_names(capsys, tools):
    conf = ('<configuration><resources><primitive id="f" class="stonith" type="fence_x"><instance_attributes id="i">'
            '<nvpair id="i-k" name="api_key" value="k3y-value"/></instance_attributes></primitive></resources>'
            '</configuration>')
    result = run(capsys, dict(configuration=conf, secret_names=['api_key']))
    assert 'k3y-value' not in json.dumps(result)


def test_the_logged_invocation_has_no_secret(capsys, tools, monkeypatch):
    logged = []
    monkeypatch.setattr(basic.AnsibleModule, 'log', lambda self, msg, log_args=None: logged.append((msg, log_args)))
    run(capsys, dict(configuration=CONF))
    assert logged and 'configuration' in logged[0][1]
    assert 's3cret' not in json.dumps(logged)
