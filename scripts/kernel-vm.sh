#!/usr/bin/env bash
# The kernel VM: Debian bookworm's own kernel booted by qemu (TCG, no KVM needed), with ZFS
# (zfs-dkms, built on the host at native speed), LVM thin, open-iscsi and dm-multipath - the
# kernel parts this machine's kernel lacks. Optional dev tool, never part of `make test`.
#
#   scripts/kernel-vm.sh build        build the cached image (once; ~15 min here), else no-op
#   scripts/kernel-vm.sh start        boot a throwaway overlay of the image, wait for ssh
#   scripts/kernel-vm.sh ssh [CMD..]  run a command in the guest (as root)
#   scripts/kernel-vm.sh stop         power the guest off
#   scripts/kernel-vm.sh record [S..] build + start + tests/kernel-vm/record.sh [sections] + stop
#                                     (sections: zfs_pool zfs lvmthin iscsi iscsi_chap)
#   scripts/kernel-vm.sh lio          build + start + the lio driver's real-kernel tests + stop
#   scripts/kernel-vm.sh thin         build + start + thin provisioning on zfs/lvmthin through tgt and LIO + stop
#   scripts/kernel-vm.sh plugin       build + start + the Proxmox plugin's kernel-initiator path + stop
#   scripts/kernel-vm.sh ha-pools     build + two VMs on shared disks + storage_ha's ZFS/LVM pool agents + stop
#
# The guest sees the checkout read-write at the same path (/work/main by 9p), the host at
# 10.0.2.2 (qemu user networking), and KVM_VM_DISKS extra virtio disks with serial=pvesan-dN,
# i.e. /dev/disk/by-id/virtio-pvesan-dN. Everything lives in .cache/kernel-vm/ (gitignored).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache/kernel-vm"
packages_file="$root/tests/kernel-vm/packages.txt"
mirror=http://deb.debian.org/debian
ssh_port=${KVM_VM_SSH_PORT:-10022}
disks=${KVM_VM_DISKS:-12}
disk_size=${KVM_VM_DISK_SIZE:-512M}
mem=${KVM_VM_MEM:-3072}
smp=${KVM_VM_SMP:-1}      # 1 vCPU: TCG on a 2-core machine shared with others
run=${KVM_VM_RUN:-$cache/run}
# Raw files attached to this VM as well as to another (two heads on one shared disk): serial
# pvesan-sharedN, i.e. /dev/disk/by-id/virtio-pvesan-sharedN; see cmd_ha_pools.
read -ra shared_disks <<<"${KVM_VM_SHARED:-}"

log() { echo "kernel-vm: $*" >&2; }

# What the VM needs on this machine; `make setup` leaves them out (the VM is optional), so the
# first use installs them.
host_tools() {
    local missing=() tool pkg
    for tool in qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils debootstrap:debootstrap ssh:openssh-client \
        mkfs.ext4:e2fsprogs tgtd:tgt; do
        pkg=${tool#*:}
        command -v "${tool%%:*}" >/dev/null || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
    fi
}

build_image() {
    # Everything that goes into the image. Its text is part of the cache key.
    local dir=$1 key=$2 packages kver
    packages=$(grep -v -e '^#' -e '^$' "$packages_file" | paste -sd' ')
    # .debs are kept in the cache, so a rebuild downloads only what changed.
    mkdir -p "$cache/debs" "$cache/apt-archives/partial"
    debootstrap --variant=minbase --components=main,contrib --cache-dir="$cache/debs" \
        --include=ca-certificates bookworm "$dir" "$mirror"
    printf 'deb %s bookworm main contrib\n' "$mirror" >"$dir/etc/apt/sources.list"
    # No daemons start inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
    chmod +x "$dir/usr/sbin/policy-rc.d"
    mount -t proc proc "$dir/proc"
    mount --rbind /sys "$dir/sys"
    mount --rbind /dev "$dir/dev"
    # Slaves: unmounting them later must never propagate back to the host's /sys and /dev.
    mount --make-rslave "$dir/sys"
    mount --make-rslave "$dir/dev"
    mount --bind "$cache/apt-archives" "$dir/var/cache/apt/archives"
    chroot "$dir" apt-get update
    # The kernel and headers first, so zfs-dkms finds a kernel to build for.
    DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get install -y --no-install-recommends \
        linux-image-amd64 linux-headers-amd64 initramfs-tools
    # shellcheck disable=SC2012  # one directory per kernel version, plain names
    kver=$(ls "$dir/lib/modules" | sort -V | tail -1)
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get install -y --no-install-recommends $packages
    # Build ZFS for the VM's kernel here, at native speed (the chroot's uname is the host's).
    chroot "$dir" dkms autoinstall -k "$kver"
    chroot "$dir" sh -c "ls /lib/modules/$kver/updates/dkms/zfs.ko*"
    echo zfs >"$dir/etc/modules-load.d/zfs.conf"
    printf '9p\n9pnet_virtio\nvirtio_blk\nvirtio_net\nvirtio_pci\n' >>"$dir/etc/initramfs-tools/modules"
    chroot "$dir" update-initramfs -u -k "$kver"
    # Guest setup: root on /dev/vda, static user-net address, ssh by key, serial autologin.
    echo kvm >"$dir/etc/hostname"
    printf '/dev/vda / ext4 defaults 0 1\n' >"$dir/etc/fstab"
    printf '[Match]\nName=eth0\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\nDNS=10.0.2.3\n' \
        >"$dir/etc/systemd/network/eth0.network"
    chroot "$dir" systemctl enable systemd-networkd ssh
    chroot "$dir" passwd -d root
    mkdir -p "$dir/etc/systemd/system/serial-getty@ttyS0.service.d" "$dir/root/.ssh"
    # shellcheck disable=SC2016  # $TERM is for systemd, not for this shell
    printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --keep-baud 115200 %%I $TERM\n' \
        >"$dir/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"
    cp "$cache/id_ed25519.pub" "$dir/root/.ssh/authorized_keys"
    echo 'UseDNS no' >"$dir/etc/ssh/sshd_config.d/kvm.conf"
    # Daemons the recordings start themselves; timers that only cost boot time.
    # (tgt's own service would hold 0.0.0.0:3260, which the LIO tests listen on)
    chroot "$dir" systemctl disable iscsid.socket iscsid.service open-iscsi.service tgt.service \
        multipathd.service multipathd.socket apt-daily.timer apt-daily-upgrade.timer \
        e2scrub_all.timer fstrim.timer man-db.timer 2>/dev/null || true
    chroot "$dir" systemctl mask systemd-networkd-wait-online.service
    rm -f "$dir/usr/sbin/policy-rc.d"
    umount "$dir/var/cache/apt/archives"
    echo "$key" >"$dir/etc/kernel-vm-key"
}

image_key() {
    { cat "$packages_file"; declare -f build_image; } | sha256sum | cut -c1-12
}

cmd_build() {
    local key image rootfs kver
    host_tools
    key=$(image_key)
    image="$cache/image-$key"
    if [ -f "$image/rootfs.raw" ]; then
        log "image $key present (cached)"
        ln -sfn "image-$key" "$cache/current"
        return 0
    fi
    mkdir -p "$cache"
    [ -f "$cache/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C kernel-vm -f "$cache/id_ed25519"
    rootfs="$cache/rootfs-$key"
    rm -rf "$rootfs" "$image.tmp"
    mkdir -p "$rootfs" "$image.tmp"
    log "building image $key (debootstrap + kernel + zfs-dkms; ~15 min once), log: $cache/build.log"
    local start=$SECONDS
    local rc=0
    # A subshell outside any condition, so set -e holds inside build_image.
    set +e
    (set -e; build_image "$rootfs" "$key") >"$cache/build.log" 2>&1
    rc=$?
    set -e
    umount "$rootfs/var/cache/apt/archives" 2>/dev/null || true
    umount -R "$rootfs/dev" "$rootfs/sys" "$rootfs/proc" 2>/dev/null || true
    if [ "$rc" != 0 ]; then
        tail -40 "$cache/build.log"
        log "build failed"
        return 1
    fi
    # shellcheck disable=SC2012
    kver=$(ls "$rootfs/lib/modules" | sort -V | tail -1)
    cp "$rootfs/boot/vmlinuz-$kver" "$image.tmp/vmlinuz"
    cp "$rootfs/boot/initrd.img-$kver" "$image.tmp/initrd.img"
    echo "$kver" >"$image.tmp/kernel-version"
    chroot "$rootfs" dpkg-query -W >"$image.tmp/packages.lst"
    # An ext4 image filled straight from the directory: no loop mount needed.
    truncate -s 8G "$image.tmp/rootfs.raw"
    mkfs.ext4 -q -L kvm-root -d "$rootfs" "$image.tmp/rootfs.raw"
    rm -rf "$rootfs"
    mv "$image.tmp" "$image"
    ln -sfn "image-$key" "$cache/current"
    # Keep only the current image.
    find "$cache" -maxdepth 1 -name 'image-*' ! -name "image-$key" -exec rm -rf {} +
    log "image $key built in $((SECONDS - start)) s (kernel $kver)"
}

ssh_guest() {
    ssh -q -i "$cache/id_ed25519" -p "$ssh_port" -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 -o ServerAliveInterval=15 -o ServerAliveCountMax=20 \
        -o LogLevel=ERROR root@127.0.0.1 "$@"
}

cmd_start() {
    local image="$cache/current" i
    host_tools
    [ -f "$image/rootfs.raw" ] || { log "no image: run '$0 build' first"; return 1; }
    if [ -f "$run/qemu.pid" ] && kill -0 "$(cat "$run/qemu.pid")" 2>/dev/null; then
        log "already running (pid $(cat "$run/qemu.pid"))"
        return 0
    fi
    rm -rf "$run"
    mkdir -p "$run"
    qemu-img create -q -f qcow2 -F raw -b "$(readlink -f "$image/rootfs.raw")" "$run/root.qcow2"
    # shellcheck disable=SC2054  # the commas are qemu's option syntax
    local args=(
        -name "kernel-vm-$ssh_port" -machine pc -accel tcg -cpu max -smp "$smp" -m "$mem"
        -display none -serial "file:$run/console.log" -monitor none
        -kernel "$image/vmlinuz" -initrd "$image/initrd.img"
        -append "root=LABEL=kvm-root rw console=ttyS0 net.ifnames=0 systemd.show_status=0"
        -nodefaults
        # Fixed PCI slots: the kernel names virtio disks in slot order, so the root disk is vda
        # and the data disks are vdb, vdc, ... (disk N = serial pvesan-dN).
        -drive "file=$run/root.qcow2,if=none,id=root,format=qcow2,cache=unsafe"
        -device virtio-blk-pci,drive=root,addr=0x3
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$ssh_port-:22" -device virtio-net-pci,netdev=n0,addr=0x4
        -fsdev "local,id=work,path=$root,security_model=none"
        -device virtio-9p-pci,fsdev=work,mount_tag=work,addr=0x5
        -pidfile "$run/qemu.pid" -daemonize
    )
    for i in $(seq 1 "$disks"); do
        truncate -s "$disk_size" "$run/disk$i.raw"
        args+=(-drive "file=$run/disk$i.raw,if=none,id=d$i,format=raw,cache=unsafe"
               -device "virtio-blk-pci,drive=d$i,serial=pvesan-d$i,addr=$(printf '0x%x' $((i + 5)))")
    done
    # Shared disks: no image locking and share-rw, so two qemus may open one file read-write;
    # cache=none, so each VM's writes reach the file at once, as on a dual-ported disk.
    for i in "${!shared_disks[@]}"; do
        args+=(-drive "file=${shared_disks[$i]},if=none,id=s$i,format=raw,cache=none,file.locking=off"
               -device "virtio-blk-pci,drive=s$i,serial=pvesan-shared$((i + 1)),share-rw=on,addr=$(printf '0x%x' $((i + disks + 6)))")
    done
    log "booting $(cat "$image/kernel-version") under TCG (about a minute)"
    qemu-system-x86_64 "${args[@]}" >"$run/qemu.log" 2>&1 || { cat "$run/qemu.log"; return 1; }
    local start=$SECONDS
    until ssh_guest true 2>/dev/null; do
        if [ $((SECONDS - start)) -gt 600 ]; then
            tail -30 "$run/console.log"
            log "no ssh after 600 s"
            return 1
        fi
        sleep 5
    done
    ssh_guest "mkdir -p '$root' && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 work '$root'"
    log "up after $((SECONDS - start)) s; '$0 ssh' runs commands in it"
}

cmd_stop() {
    [ -f "$run/qemu.pid" ] || return 0
    local pid
    pid=$(cat "$run/qemu.pid")
    ssh_guest poweroff 2>/dev/null || true
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    kill "$pid" 2>/dev/null || true
    rm -f "$run/qemu.pid"
    log "stopped"
}

# The iSCSI section logs the guest in to a private tgtd on the host: two portals (for
# dm-multipath) that the guest reaches as 10.0.2.2:<port> through qemu's user networking.
iscsi_ports=${KVM_VM_ISCSI_PORTS:-13291,13292}
iscsi_control=${KVM_VM_ISCSI_CONTROL:-17291}
iscsi_iqn=iqn.2026-11.org.pvesan:default.v-0a1b2c3d4e5f6071
# A second target with CHAP and mutual CHAP, as the service exports a tenant's volumes. Lab-only
# secrets (they appear in the recordings of `iscsiadm -S`).
iscsi_chap_iqn=iqn.2026-11.org.pvesan:chap.v-1b2c3d4e5f607182
iscsi_chap_user=pvesan-node-kvm
iscsi_chap_password=kernel-vm-chap-secret-0123
iscsi_chap_target_user=pvesan-target-kvm
iscsi_chap_target_password=kernel-vm-mutual-secret-4567

iscsi_target_up() {
    local portals="" p
    for p in ${iscsi_ports//,/ }; do portals+="${portals:+,}portal=127.0.0.1:$p"; done
    mkdir -p "$run"
    truncate -s 64M "$run/iscsi-lun1.img"
    tgtd -f -C "$iscsi_control" --iscsi "$portals" >"$run/tgtd.log" 2>&1 &
    echo $! >"$run/tgtd.pid"
    local tgtadm=(tgtadm -C "$iscsi_control" --lld iscsi)
    for _ in $(seq 1 50); do "${tgtadm[@]}" -m sys -o show >/dev/null 2>&1 && break; sleep 0.1; done
    "${tgtadm[@]}" -m target -o new -t 1 -T "$iscsi_iqn"
    # The LU as the volume service's tgt driver sets it up (targets/tgt.py: vendor PVESAN,
    # product volume, serial = the volume id's hex), so the guest sees what a node would.
    "${tgtadm[@]}" -m logicalunit -o new -t 1 -l 1 -b "$run/iscsi-lun1.img" --bstype rdwr
    "${tgtadm[@]}" -m logicalunit -o update -t 1 -l 1 \
        --params vendor_id=PVESAN,product_id=volume,scsi_sn=0a1b2c3d4e5f6071
    "${tgtadm[@]}" -m target -o bind -t 1 -I ALL
    truncate -s 32M "$run/iscsi-lun2.img"
    "${tgtadm[@]}" -m target -o new -t 2 -T "$iscsi_chap_iqn"
    "${tgtadm[@]}" -m logicalunit -o new -t 2 -l 1 -b "$run/iscsi-lun2.img" --bstype rdwr
    "${tgtadm[@]}" -m logicalunit -o update -t 2 -l 1 \
        --params vendor_id=PVESAN,product_id=volume,scsi_sn=1b2c3d4e5f607182
    "${tgtadm[@]}" -m account -o new --user "$iscsi_chap_user" --password "$iscsi_chap_password"
    "${tgtadm[@]}" -m account -o bind -t 2 --user "$iscsi_chap_user"
    "${tgtadm[@]}" -m account -o new --user "$iscsi_chap_target_user" --password "$iscsi_chap_target_password"
    "${tgtadm[@]}" -m account -o bind -t 2 --user "$iscsi_chap_target_user" --outgoing
    "${tgtadm[@]}" -m target -o bind -t 2 -I ALL
    log "tgtd (pid $(cat "$run/tgtd.pid")) serves $iscsi_iqn and $iscsi_chap_iqn (CHAP) on 127.0.0.1:{$iscsi_ports}"
}

iscsi_target_down() {
    [ -f "$run/tgtd.pid" ] || return 0
    local pid
    pid=$(cat "$run/tgtd.pid")
    # tgtd does not exit on SIGTERM while it has targets: remove the target first.
    tgtadm -C "$iscsi_control" --lld iscsi -m target -o delete --force -t 1 >/dev/null 2>&1 || true
    tgtadm -C "$iscsi_control" --lld iscsi -m target -o delete --force -t 2 >/dev/null 2>&1 || true
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$run/tgtd.pid"
}

cmd_record() {
    local sections=("$@")
    [ ${#sections[@]} -gt 0 ] || sections=(zfs_pool zfs lvmthin iscsi iscsi_chap)
    cmd_build
    cmd_start
    trap 'iscsi_target_down; cmd_stop' EXIT
    case " ${sections[*]} " in *" iscsi "* | *" iscsi_chap "*) iscsi_target_up ;; esac
    # The guest runs a copy: editing the checkout's script meanwhile cannot upset a running bash.
    ssh_guest "cp '$root/tests/kernel-vm/'record*.sh /root/ && cd '$root' && KVM_REPO='$root' \
        KVM_ISCSI_IQN=$iscsi_iqn KVM_ISCSI_PORTS=$iscsi_ports KVM_ISCSI_CHAP_IQN=$iscsi_chap_iqn \
        KVM_ISCSI_CHAP_USER=$iscsi_chap_user KVM_ISCSI_CHAP_PASSWORD=$iscsi_chap_password \
        KVM_ISCSI_CHAP_TARGET_USER=$iscsi_chap_target_user KVM_ISCSI_CHAP_TARGET_PASSWORD=$iscsi_chap_target_password \
        bash /root/record.sh ${sections[*]}"
}

# The service's lio driver against the guest's kernel target (configfs, target_core_mod,
# iscsi_target_mod) with Debian's rtslib-fb, the guest's open-iscsi logging in over loopback:
# service/tests/test_targets_lio_kernel.py, run by the guest's Python (no conftest: the guest has
# only the driver's dependencies). The JUnit report lands in .cache/kernel-vm/lio-junit.xml.
cmd_lio() {
    cmd_build
    cmd_start
    trap 'cmd_stop' EXIT
    ssh_guest "cd '$root/service' && PYTHONPATH=src python3 -m pytest -p no:cacheprovider --noconftest -v \
        --junitxml='$cache/lio-junit.xml' tests/test_targets_lio_kernel.py $*"
}

# Thin provisioning for real: discards through tgt and LIO free zvols and thin LVs, zeros on zfs,
# a full thin pool as a guest sees it (service/tests/test_thin_kernel.py, on disks d8-d10).
cmd_thin() {
    cmd_build
    cmd_start
    trap 'cmd_stop' EXIT
    # PVESAN_THIN_TGT_BIN: a tgt build's usr/ (under the checkout) instead of the guest's tgt 1.0.85
    ssh_guest "cd '$root/service' && PYTHONPATH=src PVESAN_THIN_TGT_BIN='${PVESAN_THIN_TGT_BIN:-}' \
        PVESAN_THIN_ZFS_DISK=/dev/disk/by-id/virtio-pvesan-d8 PVESAN_THIN_LVM_DISK=/dev/disk/by-id/virtio-pvesan-d9 \
        PVESAN_THIN_FULL_DISK=/dev/disk/by-id/virtio-pvesan-d10 python3 -m pytest -p no:cacheprovider --noconftest -v -s \
        --junitxml='$cache/thin-junit.xml' tests/test_thin_kernel.py $*"
}

# The Proxmox plugin's kernel-initiator path for real: a service and tgtd on the host
# (tests/kernel-vm/plugin-host.pl), the plugin with the guest's open-iscsi, udev and dm-multipath
# (tests/kernel-vm/plugin.t): CHAP and mutual CHAP, data, resize, export/import, multipath.
cmd_plugin() {
    cmd_build
    cmd_start
    trap 'cmd_stop' EXIT
    perl "$root/tests/kernel-vm/plugin-host.pl" "$root" "$run"
}

# storage_ha's ZFS and LVM-activate pool resources (tests/kernel-vm/ha-pool-agents.sh): two VMs,
# booted side by side, on two shared raw disks, as two heads on dual-ported disks.
cmd_ha_pools() {
    cmd_build
    local port_a=$((ssh_port + 1)) port_b=$((ssh_port + 2)) rc=0
    base=$cache/ha-pools # global: the EXIT trap stops the VMs through it
    rm -rf "$base"
    mkdir -p "$base"
    truncate -s 512M "$base/shared1.raw" "$base/shared2.raw"
    # One head: its own run directory and ssh port, no private data disks, both shared disks.
    head_vm() { # <name> <ssh port> <start|stop>
        run=$base/$1 ssh_port=$2 disks=0 mem=1536
        shared_disks=("$base/shared1.raw" "$base/shared2.raw")
        "cmd_$3"
    }
    # shellcheck disable=SC2064  # the locals are gone when the trap runs
    trap "(head_vm a $port_a stop); (head_vm b $port_b stop)" EXIT
    (head_vm a "$port_a" start) &
    local boot_a=$!
    (head_vm b "$port_b" start) || rc=1
    wait "$boot_a" || rc=1
    [ "$rc" = 0 ] || return 1
    # shellcheck source=scripts/env.sh
    source "$root/scripts/env.sh" # ansible-playbook and the checkout as pvesan.storage
    KVM_LOG_DIR=$base KVM_SSH_KEY=$cache/id_ed25519 KVM_SSH_PORT_A=$port_a KVM_SSH_PORT_B=$port_b \
        KVM_QEMU_PID_B=$(cat "$base/b/qemu.pid") bash "$root/tests/kernel-vm/ha-pool-agents.sh" |
        tee "$cache/ha-pool-agents.log"
}

case "${1:-}" in
    build) cmd_build ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    ssh) shift; ssh_guest "$@" ;;
    record) shift; cmd_record "$@" ;;
    lio) shift; cmd_lio "$@" ;;
    thin) shift; cmd_thin "$@" ;;
    plugin) cmd_plugin ;;
    ha-pools) cmd_ha_pools ;;
    *) sed -n '2,18p' "$0"; exit 2 ;;
esac
