"""Verify the pve_storage role on the Proxmox-like lab nodes (pve1, pve2).

Checks storage.cfg against the role's own input, `pve_storage_definitions` from the
inventory: every present storage has its header and its properties, absent ones are gone,
secrets live in /etc/pve/priv with mode 0600 and never in storage.cfg, the file has no CR and
every section ends with an empty line, and no lock is left behind.
"""

import hashlib
import os

import pytest
import testinfra.utils.ansible_runner

# checks through `podman exec` (fast); names and variables from the inventory
RUNNER = testinfra.utils.ansible_runner.AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"])
testinfra_hosts = ["podman://" + name for name in RUNNER.get_hosts("pve_nodes")]

SECRETS = {
    # (type, option) -> (path under /etc/pve, expected content)
    ("pvesan", "auth_token"): ("priv/storage/{}.pw", "{}\n"),
    ("cifs", "password"): ("priv/storage/{}.pw", "password={}\n"),
    ("pbs", "password"): ("priv/storage/{}.pw", "{}\n"),
    ("esxi", "password"): ("priv/storage/{}.pw", "{}"),
    ("rbd", "keyring"): ("priv/ceph/{}.keyring", "{}\n"),
    ("cephfs", "keyring"): ("priv/ceph/{}.secret", "{}\n"),
}


def definitions(host):
    variables = RUNNER.get_variables(host.backend.name)
    defs = variables.get("pve_storage_definitions")
    if not defs:
        pytest.skip("pve_storage_definitions is not set for this host")
    return defs


def storage_cfg(host):
    return host.file("/etc/pve/storage.cfg").content_string


def sections(text):
    """{id: (type, [property lines])} with a minimal reading of the format."""
    result, current = {}, None
    for line in text.split("\n"):
        if line and not line[0].isspace() and not line.startswith("#"):
            stype, sid = line.split(":", 1)
            current = sid.strip()
            result[current] = (stype.strip(), [])
        elif line.strip() and current and not line.lstrip().startswith("#"):
            result[current][1].append(line.strip())
        elif not line:
            current = None
    return result


def encode(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return None  # order-free lists are compared separately
    return str(value)


def test_storage_cfg_is_well_formed(host):
    definitions(host)
    text = storage_cfg(host)
    assert "\r" not in text
    # (the ansible backend strips trailing white space from file contents: ask od)
    assert host.check_output("tail -c 2 /etc/pve/storage.cfg | od -An -tx1").split() == ["0a", "0a"]
    assert not host.file("/etc/pve/priv/lock/file-storage_cfg").exists


def test_declared_storages_are_present_with_their_properties(host):
    found = sections(storage_cfg(host))
    for item in definitions(host):
        if item.get("state", "present") == "absent":
            assert item["name"] not in found
            continue
        assert item["name"] in found, item["name"]
        stype, lines = found[item["name"]]
        if "type" in item:
            assert stype == item["type"]
        props = dict((line.split(None, 1) + [""])[:2] for line in lines)
        for key, value in (item.get("options") or {}).items():
            expected = encode(value)
            if expected is None:
                assert props[key].split(",") == [str(v) for v in value]
            else:
                assert props[key] == expected, (item["name"], key)
        if "content" in item:
            assert sorted(props["content"].split(",")) == sorted(item["content"])
        if stype == "pvesan" and "shared" not in item:
            assert props["shared"] == "1"  # a custom plugin's storage has to say it is shared


def test_secrets_are_in_priv_and_not_in_storage_cfg(host):
    text = storage_cfg(host)
    for item in definitions(host):
        for (stype, option), (path, template) in SECRETS.items():
            if item.get("type") != stype or option not in item:
                continue
            secret = host.file("/etc/pve/" + path.format(item["name"]))
            if item.get("state", "present") == "absent":
                assert not secret.exists
                continue
            assert secret.exists
            assert secret.mode == 0o600
            expected = template.format(item[option].rstrip("\n")).encode()
            assert secret.sha256sum == hashlib.sha256(expected).hexdigest()
            assert item[option].strip() not in text
