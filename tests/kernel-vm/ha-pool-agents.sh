#!/usr/bin/env bash
# storage_ha's ZFS and LVM-activate pool resources for real: two kernel VMs ("heads" head-a and
# head-b) on two shared disks, the OCF agents run as Pacemaker runs them, with the parameters
# roles/storage_ha/templates/cib.xml.j2 renders, on heads prepared as the role prepares them
# (a distinct /etc/hostid, lvm.conf system_id_source = "uname").
#   ZFS (multihost=on): start/monitor/stop; the peer's start refused while a head has the pool
#   imported (MMP), even with the agent's `zpool import -f`; takeover after a clean stop; takeover
#   after the holder is killed (as fencing leaves it).
#   LVM-activate (vg_access_mode=system_id): the same, and the peer's own `vgchange -ay` and boot
#   autoactivation leave a VG owned by the other head alone.
# Run by `scripts/kernel-vm.sh ha-pools`, which boots the two VMs and sets:
#   KVM_SSH_KEY, KVM_SSH_PORT_A, KVM_SSH_PORT_B, KVM_QEMU_PID_B
# Output: one line per check (ok/FAIL) and the agents' own messages; exit 1 if any check failed.
# shellcheck disable=SC2317  # the agent functions are called through timed
set -uo pipefail

failed=0
on() {
    local port=$1
    shift
    ssh -q -i "$KVM_SSH_KEY" -p "$port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o ConnectTimeout=5 -o LogLevel=ERROR root@127.0.0.1 "$@"
}
a() { on "$KVM_SSH_PORT_A" "$@"; }
b() { on "$KVM_SSH_PORT_B" "$@"; }
check() {
    # check <description> <expected rc> <actual rc>
    if [ "$2" = "$3" ]; then
        echo "ok   $1 (rc $3)"
    else
        echo "FAIL $1: rc $3, expected $2"
        failed=1
    fi
}

# The agents as Pacemaker runs them: OCF_ROOT, the instance name and the rendered parameters.
zfs_agent() { # <head function> <action>
    "$1" "OCF_ROOT=/usr/lib/ocf OCF_RESOURCE_INSTANCE=pvesan-pool-zpool-zpool OCF_RESKEY_pool=tank \
        OCF_RESKEY_importargs='-d /dev/disk/by-id' OCF_RESKEY_CRM_meta_timeout=90000 /usr/lib/ocf/resource.d/heartbeat/ZFS $2"
}
lvm_agent() {
    "$1" "OCF_ROOT=/usr/lib/ocf OCF_RESOURCE_INSTANCE=pvesan-pool-lvm-vg OCF_RESKEY_vgname=pvesanvg \
        OCF_RESKEY_vg_access_mode=system_id OCF_RESKEY_activation_mode=exclusive \
        OCF_RESKEY_CRM_meta_timeout=90000 /usr/lib/ocf/resource.d/heartbeat/LVM-activate $2"
}
timed() { # <description> <expected rc> <command...>: check, with the seconds it took
    local what=$1 expect=$2 start=$SECONDS
    shift 2
    "$@"
    local rc=$?
    check "$what [$((SECONDS - start)) s]" "$expect" "$rc"
}

echo "== two heads; on head-a a pool and a VG made the plain way (no multihost, no system ID)"
# (both were booted from one image: the same /etc/hostid, which zfsutils' postinst wrote there)
a "hostname head-a && hostname >/etc/hostname"
b "hostname head-b && hostname >/etc/hostname"
a "zpool create -f tank /dev/disk/by-id/virtio-pvesan-shared1 && zfs create -V 64M tank/vm-100-disk-0 &&
    udevadm settle && echo written-on-head-a | dd of=/dev/zvol/tank/vm-100-disk-0 bs=4k conv=sync,fsync status=none"
a "pvcreate -q /dev/disk/by-id/virtio-pvesan-shared2 && vgcreate -q pvesanvg /dev/disk/by-id/virtio-pvesan-shared2 &&
    lvcreate -q --type thin-pool -L 128M -n data pvesanvg && lvcreate -q -V 64M -T pvesanvg/data -n vm-100-disk-0 &&
    echo written-on-head-a | dd of=/dev/pvesanvg/vm-100-disk-0 bs=4k conv=sync,fsync status=none && vgchange -q -an pvesanvg"
b "pvscan --cache >/dev/null 2>&1; vgs --foreign -o vg_name,systemid pvesanvg"

echo "== storage_ha prepares them (tests/kernel-vm/ha-pools.yml), twice"
inventory=$(mktemp --suffix .yml)
cat >"$inventory" <<INV
heads:
  hosts:
    head-a: {ansible_port: $KVM_SSH_PORT_A}
    head-b: {ansible_port: $KVM_SSH_PORT_B}
  vars:
    ansible_host: 127.0.0.1
    ansible_user: root
    ansible_ssh_private_key_file: $KVM_SSH_KEY
    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    ansible_python_interpreter: /usr/bin/python3
INV
playbook=$(dirname "$0")/ha-pools.yml
log=${KVM_LOG_DIR:-/tmp}
ansible-playbook -i "$inventory" "$playbook" >"$log/ha-pools-run0.log" 2>&1
check "the role refuses two heads with one host ID" 2 $?
grep -o "Both heads have the ZFS host ID [^:]*" "$log/ha-pools-run0.log" | head -1
b "zgenhostid -f"
ansible-playbook -i "$inventory" "$playbook" >"$log/ha-pools-run1.log" 2>&1
check "first run of the role's pool preparation" 0 $?
grep -E "^(changed|fatal)|ok=" "$log/ha-pools-run1.log"
ansible-playbook -i "$inventory" "$playbook" >"$log/ha-pools-run2.log" 2>&1
check "second run" 0 $?
grep -E "ok=" "$log/ha-pools-run2.log"
check "second run changes nothing" 0 "$(grep -c "changed=[1-9]" "$log/ha-pools-run2.log")"
rm -f "$inventory"
a "hostid; zpool get -H -o property,value multihost,cachefile tank; vgs -o vg_name,systemid pvesanvg; lvm systemid"
b "hostid; lvm systemid"
timed "multihost=on and cachefile=none" 0 a "zpool get -H -o value multihost,cachefile tank | paste -sd, | grep -qx on,none"
timed "the VG is owned by head-a" 0 a "vgs --noheadings -o systemid pvesanvg | grep -qw head-a"
[ "$(a hostid)" != "$(b hostid)" ]
check "the heads' host IDs differ" 0 $?
a "zpool export tank"

echo "== ZFS"
timed "head-a: start imports the pool" 0 zfs_agent a start
timed "head-a: monitor says running" 0 zfs_agent a monitor
timed "head-b: monitor says not running" 7 zfs_agent b monitor
# The agent imports with -f; multihost must refuse it while head-a writes its MMP uberblocks.
timed "head-b: start refused while head-a has the pool (multihost)" 1 zfs_agent b start
b "zpool import -d /dev/disk/by-id -f -o cachefile=none tank 2>&1 | head -3; zpool list -H tank 2>&1 | head -1"
timed "head-a: still running after head-b's attempt" 0 zfs_agent a monitor
timed "head-a: stop exports" 0 zfs_agent a stop
timed "head-b: start after a clean stop" 0 zfs_agent b start
timed "head-b: reads what head-a wrote" 0 b "udevadm settle; head -c 17 /dev/zvol/tank/vm-100-disk-0 | grep -q written-on-head-a"
timed "head-a: start refused while head-b has the pool" 1 zfs_agent a start

echo "== LVM-activate"
timed "head-a: start activates the VG" 0 lvm_agent a start
timed "head-a: monitor says running" 0 lvm_agent a monitor
timed "head-b: monitor says not running" 7 lvm_agent b monitor
b "vgchange -ay pvesanvg 2>&1 | head -3; vgchange -aay --autoactivation event pvesanvg 2>&1 | head -3"
timed "head-b: its own vgchange -ay and autoactivation leave head-a's VG inactive" 0 \
    b "! lvs --foreign --noheadings -o lv_active pvesanvg/vm-100-disk-0 | grep -q active"
b "vgs --foreign -o vg_name,systemid pvesanvg"
timed "head-a: stop deactivates" 0 lvm_agent a stop
timed "head-b: start takes the VG over" 0 lvm_agent b start
timed "head-b: reads what head-a wrote" 0 b "head -c 17 /dev/pvesanvg/vm-100-disk-0 | grep -q written-on-head-a"
a "vgs --foreign -o vg_name,systemid pvesanvg"
timed "head-a: its own vgchange -ay leaves head-b's VG inactive" 0 \
    a "vgchange -ay pvesanvg >/dev/null 2>&1; ! lvs --foreign --noheadings -o lv_active pvesanvg/vm-100-disk-0 | grep -q active"
# What the system ID does not stop: the agent itself takes a VG over from a live head (it passes
# the owner in extra_system_ids). Only fencing keeps the cluster from doing that; recorded here so
# that no document claims otherwise.
timed "head-a: LVM-activate start while head-b has the VG takes it over all the same" 0 lvm_agent a start
a "vgs -o vg_name,systemid pvesanvg"
# head-b's LVs are still active: both heads could now write the same blocks. Fencing would power
# head-b off; its mappings go as they would with it (left in place, head-b's next start finds
# "LVs active" and reports success without taking the VG back - seen on the first run).
b "dmsetup remove_all --force"
timed "head-a: stop" 0 lvm_agent a stop
timed "head-b: start (back to head-b)" 0 lvm_agent b start
timed "head-b owns the VG again" 0 b "vgs --noheadings -o systemid pvesanvg | grep -qw head-b"

echo "== head-b dies holding both pools (kill -9 of its VM, as fencing leaves it)"
b "echo written-on-head-b | dd of=/dev/zvol/tank/vm-100-disk-0 bs=4k conv=sync,fsync status=none &&
    echo written-on-head-b | dd of=/dev/pvesanvg/vm-100-disk-0 bs=4k conv=sync,fsync status=none"
kill -9 "$KVM_QEMU_PID_B"
timed "head-a: ZFS start takes the pool over from the dead head" 0 zfs_agent a start
timed "head-a: reads what head-b wrote to the zvol" 0 a "udevadm settle; head -c 17 /dev/zvol/tank/vm-100-disk-0 | grep -q written-on-head-b"
timed "head-a: LVM-activate start takes the VG over from the dead head" 0 lvm_agent a start
timed "head-a: reads what head-b wrote to the LV" 0 a "head -c 17 /dev/pvesanvg/vm-100-disk-0 | grep -q written-on-head-b"
a "zpool status -x tank; vgs -o vg_name,systemid pvesanvg"
timed "head-a: stop the pool" 0 zfs_agent a stop
timed "head-a: stop the VG" 0 lvm_agent a stop

if [ "$failed" = 0 ]; then echo "ha-pool-agents: all checks passed"; else echo "ha-pool-agents: FAILED"; fi
exit "$failed"
