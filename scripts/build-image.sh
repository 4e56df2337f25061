#!/usr/bin/env bash
# Build the lab's base container image from debootstrap, once.
# The tag carries a hash of this script and the package list, so the image is rebuilt only when
# they change; a second run finds the image and returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
export CONTAINERS_CONF="$PWD/lab/containers.conf"

hash=$(cat scripts/build-image.sh lab/image-packages.txt | sha256sum | cut -c1-12)
image="localhost/pvesan-lab:${hash}"
if podman image exists "$image"; then
    echo "lab image $image present (cached)"
    podman tag "$image" localhost/pvesan-lab:latest
    exit 0
fi

mapfile -t packages < <(grep -v '^#' lab/image-packages.txt | grep -v '^$')
rootfs=$(mktemp -d /var/tmp/pvesan-rootfs.XXXXXX)
cleanup() {
    umount "$rootfs/proc" 2>/dev/null || true
    rm -rf "$rootfs" "$rootfs.log"
}
trap cleanup EXIT
echo "building lab image $image with debootstrap (takes a few minutes once)"
# debootstrap only makes a base system: its own dependency resolver fails on big package sets
# (the cluster stack pulls ruby and python3-cryptography). apt installs the list in the chroot.
debootstrap --variant=minbase --include=python3,systemd,systemd-sysv,dbus bookworm "$rootfs" \
    http://deb.debian.org/debian >"$rootfs.log" 2>&1 || { tail -30 "$rootfs.log"; exit 1; }
mount -t proc proc "$rootfs/proc"
# no daemon may start inside the chroot while packages install
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
{ chroot "$rootfs" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get install -y -qq --no-install-recommends "${packages[@]}"
} >"$rootfs.log" 2>&1 || { tail -30 "$rootfs.log"; exit 1; }
rm -f "$rootfs/usr/sbin/policy-rc.d"
umount "$rootfs/proc"
# Container-friendly systemd: no getty, no udev settle waits, no kernel-only units.
chroot "$rootfs" systemctl mask getty.target systemd-udevd.service systemd-udev-trigger.service \
    systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount >/dev/null 2>&1 || true
# Services are enabled by the roles, not by package post-install defaults.
chroot "$rootfs" systemctl disable tgt.service iscsid.socket iscsid.service open-iscsi.service \
    multipathd.service multipathd.socket stunnel4.service strongswan.service \
    corosync.service pacemaker.service pcsd.service >/dev/null 2>&1 || true
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
echo 'deb http://deb.debian.org/debian bookworm main' >"$rootfs/etc/apt/sources.list"
tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' - "$image" >/dev/null
podman tag "$image" localhost/pvesan-lab:latest
# Keep only the current build.
podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/pvesan-lab:' \
    | grep -v -e ":${hash}\$" -e ':latest$' | xargs -r podman rmi >/dev/null 2>&1 || true
echo "lab image $image built"
