"""Verify the host roles after converge and side_effect (molecule's testinfra verifier)."""

import json
import os
import re

import testinfra.utils.ansible_runner

# The inventory tells names, groups and variables; the checks themselves run through
# `podman exec` (testinfra's podman backend), much faster than one ansible call per check.
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = ["podman://" + name for name in RUNNER.get_hosts("all")]


def variables(host):
    return RUNNER.get_variables(host.backend.name)


def is_node(host):
    return "pve_nodes" in variables(host)["group_names"]


# transport_encryption (tls)

def test_tls_tunnels_run(host):
    unit = host.service("pvesan-stunnel")
    assert unit.is_running
    assert unit.is_enabled
    assert host.file("/etc/systemd/system/pvesan-stunnel.service").contains("^Restart=on-failure$")


def test_tls_settings(host):
    conf = host.file("/etc/pvesan/stunnel.conf")
    assert conf.mode == 0o640
    assert conf.contains("^sslVersionMin = TLSv1.3$")
    assert conf.contains("^verifyChain = yes$")
    assert conf.contains("^socket = l:TCP_NODELAY=1$")
    key = host.file("/etc/pvesan/tls/host.key")
    assert key.mode == 0o640
    assert key.group == "stunnel4"


def test_tls_listeners(host):
    portals = variables(host)["transport_encryption_portals"]
    if is_node(host):
        for index, _portal in enumerate(portals):
            assert host.socket("tcp://127.0.0.1:%d" % (13260 + index)).is_listening
    else:
        for portal in portals:
            assert host.socket("tcp://%s:%d" % (portal["address"], portal["tls_port"])).is_listening


def test_tls_endpoint_map(host):
    if not is_node(host):
        assert not host.file("/etc/pvesan/tls-endpoints.json").exists
        return
    data = json.loads(host.file("/etc/pvesan/tls-endpoints.json").content_string)
    assert data == {
        "version": 1,
        "mode": "tls",
        "endpoints": {"10.89.11.10:3260": "127.0.0.1:13260", "10.89.12.10:3260": "127.0.0.1:13261"},
    }


def test_no_ipsec_left(host):
    assert not host.file("/etc/swanctl/conf.d/pvesan.conf").exists


# multipath

def test_multipath_dropin(host):
    dropin = host.file("/etc/multipath/conf.d/pvesan.conf")
    if not is_node(host):
        assert not dropin.exists
        return
    assert dropin.contains('vendor "PVESAN"')
    # The merged configuration multipath itself reads.
    merged = host.check_output("multipath -t")
    assert 'find_multipaths "on"' in merged
    assert 'protocol "scsi:iscsi"' in merged
    assert "no_path_retry 12" in merged
    assert host.service("multipathd").is_enabled


# host_tuning

def test_sysctl_file(host):
    f = host.file("/etc/sysctl.d/90-pvesan.conf")
    assert f.contains("^net.core.rmem_max = 16777216$")
    assert f.contains("^net.ipv4.tcp_slow_start_after_idle = 0$")


def test_iscsid_session_settings(host):
    f = host.file("/etc/iscsi/iscsid.conf")
    assert f.contains("^node.session.cmds_max = 1024$")
    assert f.contains("^node.session.queue_depth = 128$")
    assert f.contains("^node.session.timeo.replacement_timeout = 5$")
    # Each key set once: the commented default was replaced, not duplicated.
    assert len(re.findall(r"(?m)^node\.session\.cmds_max\s*=", f.content_string)) == 1


def test_udev_rules(host):
    f = host.file("/etc/udev/rules.d/90-pvesan-block.rules")
    assert f.contains('ENV{ID_PATH}=="\\*-iscsi-\\*".*ATTR{queue/scheduler}="none"')
    assert f.contains('ATTR{queue/nr_requests}="128"')
    assert f.contains('ENV{DM_UUID}=="mpath-\\*".*ATTR{queue/add_random}="0"')


def test_kernel_cmdline(host):
    if not is_node(host):
        return
    args = host.file("/etc/kernel/cmdline").content_string.split()
    # The existing arguments are kept, ours appended once.
    assert args[:3] == ["root=ZFS=rpool/ROOT/pve-1", "boot=zfs", "quiet"]
    for arg in ("cpufreq.default_governor=performance", "intel_idle.max_cstate=1", "processor.max_cstate=1"):
        assert args.count(arg) == 1


def test_zfs_arc_limit(host):
    if not is_node(host):
        assert not host.file("/etc/modprobe.d/zfs.conf").exists
        return
    assert host.file("/etc/modprobe.d/zfs.conf").contains("^options zfs zfs_arc_max=4294967296$")


# volume_service, installed with method pypi from the lab's package index (prepare.yml)

def test_volume_service_from_the_index(host):
    if is_node(host):
        return
    assert host.service("pvesan-service").is_running
    assert host.file("/opt/pvesan/venv/.installed").content_string.startswith("pypi-")
    # The service itself came from its own wheel, not the decoy "pvesan-service" 99.0.0 on the
    # index; its dependencies came from the index (only the service's wheel was copied).
    version = host.check_output(
        "/opt/pvesan/venv/bin/python -c 'import importlib.metadata as m; print(m.version(\"pvesan-service\"))'")
    assert version != "99.0.0"
    copied = host.check_output("ls /opt/pvesan/wheelhouse/%s" % host.file("/opt/pvesan/venv/.installed").content_string.strip())
    assert copied.split() == ["pvesan_service-%s-py3-none-any.whl" % version]
    health = json.loads(host.check_output("curl -sk https://127.0.0.1:8443/healthz"))
    assert health["status"] == "ok" and health["target_up"] is True


def test_tgtd_iothreads(host):
    if is_node(host):
        return
    assert host.file("/etc/systemd/system/tgt.service.d/pvesan.conf").contains("^ExecStart=/usr/sbin/tgtd -f -t 2$")
    cmdline = host.check_output("tr '\\0' ' ' </proc/$(pidof tgtd)/cmdline")
    assert cmdline.split() == ["/usr/sbin/tgtd", "-f", "-t", "2"]


def test_volumes_exported(host):
    if is_node(host):
        return
    volumes = json.loads(host.check_output(
        "pvesan --config /etc/pvesan/client.toml --tenant lab --json volume list"))
    assert sorted(v["name"] for v in volumes) == ["hr-vol-1", "hr-vol-2"]
    targets = host.check_output("tgtadm --lld iscsi --mode target --op show")
    for volume in volumes:
        assert re.search(r"(?m)^Target \d+: %s$" % re.escape(volume["iqn"]), targets)


# pve_host: the daemons that load storage plugins (stand-ins, prepare.yml)

def test_plugin_change_reloaded_the_running_plugin_daemons_once(host):
    """converge installed the plugin (one reload of each running daemon), the idempotence run and
    side_effect changed nothing (no second reload); stopped or missing daemons were not touched."""
    if not is_node(host):
        return
    assert host.file("/usr/share/perl5/PVE/Storage/Custom/PVESANPlugin.pm").exists
    for unit in ("pvestatd", "pve-ha-lrm"):
        assert host.service(unit).is_running
        assert len(host.file("/run/lab-reloads/%s" % unit).content_string.split()) == 1, unit
    assert not host.service("pve-ha-crm").is_running
    assert not host.file("/run/lab-reloads/pve-ha-crm").exists
    for unit in ("pvedaemon", "pveproxy", "pvescheduler"):
        assert not host.file("/etc/systemd/system/%s.service" % unit).exists
