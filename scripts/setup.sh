#!/usr/bin/env bash
# One-command setup of a fresh Debian 12 machine for development, tests and the lab.
# Idempotent and fast on a second run: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n== %s\n' "$*"; }

# Debian packages: the lab (podman/runc/debootstrap), the real tools the tests drive
# (tgt, libiscsi, QEMU's iSCSI client, stunnel, open-iscsi, multipath-tools, XFS, PostgreSQL,
# strongSwan, tshark, and Pacemaker's cibadmin/crm_diff/crm_verify from pacemaker-cli-utils,
# which the pacemaker_cib integration target runs on CIB files, no cluster started) and the Perl
# the Proxmox plugin tests need.
packages=(
    shellcheck podman runc debootstrap uidmap slirp4netns fuse-overlayfs iproute2 make git
    tgt libiscsi-bin libnbd-bin qemu-utils qemu-block-extra stunnel4 open-iscsi multipath-tools
    xfsprogs btrfs-progs sqlite3 postgresql tshark strongswan-swanctl charon-systemd
    pacemaker-cli-utils openssl perl libjson-pp-perl
)
step "Debian packages"
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "all ${#packages[@]} present"
fi
# The distribution's units would hold ports and state the tests manage themselves.
for unit in tgt.service iscsid.service iscsid.socket multipathd.service multipathd.socket corosync.service pacemaker.service; do
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
done

# tgt takes 128 kernel AIO slots per LUN with bstype aio: the default fs.aio-max-nr (65536)
# stops at 512 LUNs, short of what the service's tests and benchmarks create.
if (($(cat /proc/sys/fs/aio-max-nr) < 1048576)); then
    sysctl -q -w fs.aio-max-nr=1048576 || echo "warning: could not raise fs.aio-max-nr"
fi

step "Python virtual environment (.venv)"
stamp=.venv/.requirements.sha256
inputs=(requirements-dev.txt)
[[ -f service/pyproject.toml ]] && inputs+=(service/pyproject.toml)
want=$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)
if [[ -x .venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    echo "up to date"
else
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -r requirements-dev.txt
    if [[ -f service/pyproject.toml ]]; then
        .venv/bin/pip install -q -e 'service[test]'
    fi
    echo "$want" >"$stamp"
    echo "installed"
fi

step "Collection path (ansible_collections/pvesan/storage)"
# Ansible and pytest import the checkout through this symlink. ansible-test needs a real
# directory under ansible_collections/ and gets a synced copy instead (scripts/test.sh).
mkdir -p .cache/collections/ansible_collections/pvesan
ln -sfn ../../../.. .cache/collections/ansible_collections/pvesan/storage
echo ".cache/collections/ansible_collections/pvesan/storage -> $root"

step "ansible-test pip bootstrap"
# ansible-test --venv downloads a get-pip script from a host outside the package registries;
# give it our stand-in (scripts/ansible-test/get_pip.py explains).
pip_version=$(.venv/bin/python -c "import re, ansible_test, pathlib; print(re.search(r\"pip='([0-9.]+)'\", (pathlib.Path(ansible_test.__file__).parent / '_internal/python_requirements.py').read_text()).group(1))")
cache=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
mkdir -p "$(dirname "$cache")"
cmp -s scripts/ansible-test/get_pip.py "$cache" || cp scripts/ansible-test/get_pip.py "$cache"
echo "$cache"

step "Lab base image"
bash scripts/build-image.sh

echo
echo "setup done: run 'make test' for the suite, 'make lab' for the lab"
