"""Verify every lab host after converge (run by molecule's testinfra verifier)."""

import os

import testinfra.utils.ansible_runner

# The inventory tells names, groups and variables; the checks run through `podman exec`
# (testinfra's podman backend), much faster than one ansible run per check.
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = ["podman://" + name for name in RUNNER.get_hosts("all")]


def test_systemd_booted(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded")


def test_two_storage_networks(host):
    addresses = RUNNER.get_variables(host.backend.name)["san_addresses"]
    assert len(addresses) == 2
    configured = host.run("ip -4 -o addr show").stdout
    for address in addresses:
        assert f"inet {address}/" in configured


def test_pve_layout(host):
    if "pve_nodes" not in RUNNER.get_variables(host.backend.name)["group_names"]:
        return
    assert host.file("/etc/pve").is_directory
    priv = host.file("/etc/pve/priv")
    assert priv.is_directory
    assert priv.mode == 0o700
    assert host.file("/etc/pve/storage.cfg").contains("^dir: local$")
