"""Verify the Proxmox integration after converge: the service on the storage host, the plugin,
CLI and storage definition on the nodes, and that no secret sits where it must not."""

import json
import os

import testinfra
import testinfra.utils.ansible_runner

# checks through `podman exec` (fast); names and groups from the inventory
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = ["podman://" + name for name in RUNNER.get_hosts("all")]


def groups(host):
    return RUNNER.get_variables(host.backend.name)["group_names"]


def test_service_running_and_healthy(host):
    if "storage_hosts" not in groups(host):
        return
    assert host.service("pvesan-service").is_running
    assert host.service("pvesan-service").is_enabled
    assert host.service("tgt").is_running
    health = json.loads(host.check_output("curl -sk https://127.0.0.1:8443/healthz"))
    assert health == {"status": "ok", "database": True, "schema_version": health["schema_version"], "target_up": True,
                      "alarms": []}


def test_install_method_and_tgtd_iothreads(host):
    """Installed from the wheelhouse; volume_service_tgtd_iothreads (default 2) reaches tgtd
    through the tgt.service drop-in."""
    if "storage_hosts" not in groups(host):
        return
    out = host.check_output(
        "cat /opt/pvesan/venv/.installed; grep '^ExecStart=.' /etc/systemd/system/tgt.service.d/pvesan.conf;"
        " tr '\\0' ' ' </proc/$(pidof tgtd)/cmdline").splitlines()
    assert out[0].startswith("wheelhouse-")
    assert out[1] == "ExecStart=/usr/sbin/tgtd -f -t 2"
    assert out[2].split() == ["/usr/sbin/tgtd", "-f", "-t", "2"]


def test_service_hardening_and_secrets(host):
    if "storage_hosts" not in groups(host):
        return
    unit = host.check_output("systemctl show pvesan-service -p ProtectSystem -p NoNewPrivileges -p Restart")
    assert "ProtectSystem=strict" in unit and "NoNewPrivileges=yes" in unit and "Restart=on-failure" in unit
    for path in ("/etc/pvesan/admin.token", "/etc/pvesan/tls.key", "/etc/pvesan/tenants/lab.token",
                 "/etc/pvesan/secret.key", "/var/lib/pvesan/state.db", "/var/lib/pvesan/state.db-wal"):
        f = host.file(path)
        assert f.exists and f.mode == 0o600 and f.user == "root"
    token = host.file("/etc/pvesan/admin.token").content_string.strip()
    assert token not in host.file("/etc/pvesan/service.yaml").content_string
    assert token not in host.check_output("journalctl -u pvesan-service --no-pager")


def test_pool_on_reflink_xfs(host):
    if "storage_hosts" not in groups(host):
        return
    mount = host.mount_point("/srv/pvesan/pool1")
    assert mount.exists and mount.filesystem == "xfs"
    assert "reflink=1" in host.check_output("xfs_info /srv/pvesan/pool1")


def test_cli_as_admin_on_storage_host(host):
    if "storage_hosts" not in groups(host):
        return
    status = json.loads(host.check_output("pvesan --config /etc/pvesan/client.toml --json status"))
    assert status["total"] > 0 and status["available"] > 0
    assert [p["name"] for p in status["pools"]] == ["pool1"]


def test_node_plugin_client_and_storage(host):
    if "pve_nodes" not in groups(host):
        return
    plugin = host.file("/usr/share/perl5/PVE/Storage/Custom/PVESANPlugin.pm")
    assert plugin.exists and plugin.mode == 0o644
    assert host.file("/usr/local/bin/pvesan").is_symlink
    cfg = host.file("/etc/pve/storage.cfg").content_string
    assert "pvesan: pvesan\n" in cfg and "\tapi_url https://10.89.1.10:8443\n" in cfg
    assert "auth_token" not in cfg   # the token is in priv/, never in storage.cfg
    pw = host.file("/etc/pve/priv/storage/pvesan.pw")
    assert pw.exists and pw.mode == 0o600
    # the node reaches the service with its cluster token, verifying the certificate
    env = "PVESAN_API_URL=https://10.89.1.10:8443 PVESAN_TOKEN_FILE=/etc/pve/priv/storage/pvesan.pw PVESAN_CONFIG=/dev/null"
    who = json.loads(host.check_output(env + " pvesan --json whoami"))
    assert who["tenant"] == "lab" and not who["admin"]


def test_initiator_name_set(host):
    if "pve_nodes" not in groups(host):
        return
    assert "InitiatorName=iqn." in host.file("/etc/iscsi/initiatorname.iscsi").content_string


def test_cluster_tenant_is_secure_by_default(host):
    """The lab's tenant has generated CHAP credentials and, as its initiator ACL, exactly the
    initiator names of the cluster's nodes (what the volume_service role read from them); an
    initiator not on it discovers none of its targets."""
    if "storage_hosts" not in groups(host):
        return
    tenant = json.loads(host.check_output("pvesan --config /etc/pvesan/client.toml --json tenant show lab"))
    names = set()
    for node in RUNNER.get_hosts("pve_nodes"):
        text = testinfra.get_host("podman://" + node).file("/etc/iscsi/initiatorname.iscsi").content_string
        names |= {line.split("=", 1)[1].strip() for line in text.splitlines() if line.startswith("InitiatorName=")}
    assert sorted(tenant["initiators"]) == sorted(names) and len(names) == 2  # one name per node
    assert tenant["chap"]["user"].startswith("pvesan-") and tenant["chap"]["password"]
    cli = "pvesan --config /etc/pvesan/client.toml --tenant lab --json volume "
    vol = json.loads(host.check_output(cli + "create vm-999-disk-0 8M"))
    try:
        seen_by_node = host.check_output("iscsi-ls -i %s iscsi://10.89.1.10:3260" % sorted(names)[0])
        seen_by_stranger = host.run("iscsi-ls -i iqn.2026-11.org.example:stranger iscsi://10.89.1.10:3260").stdout
        assert vol["export"]["iqn"] in seen_by_node and vol["export"]["iqn"] not in seen_by_stranger
        assert "lab" not in vol["export"]["iqn"].split(":", 1)[1]  # the IQN names no tenant
    finally:
        host.check_output(cli + "delete vm-999-disk-0")
