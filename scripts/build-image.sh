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

packages=$(grep -v '^#' lab/image-packages.txt | grep -v '^$' | paste -sd, -)
rootfs=$(mktemp -d /var/tmp/pvesan-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "building lab image $image with debootstrap (takes a few minutes once)"
debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" http://deb.debian.org/debian >"$rootfs.log" 2>&1 \
    || { tail -30 "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# Container-friendly systemd: no getty, no udev settle waits, no kernel-only units.
chroot "$rootfs" systemctl mask getty.target systemd-udevd.service systemd-udev-trigger.service \
    systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount >/dev/null 2>&1 || true
# Services are enabled by the roles, not by package post-install defaults.
chroot "$rootfs" systemctl disable tgt.service iscsid.socket iscsid.service open-iscsi.service \
    multipathd.service multipathd.socket stunnel4.service strongswan.service >/dev/null 2>&1 || true
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
echo 'deb http://deb.debian.org/debian bookworm main' >"$rootfs/etc/apt/sources.list"
tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' - "$image" >/dev/null
podman tag "$image" localhost/pvesan-lab:latest
# Keep only the current build.
podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/pvesan-lab:' \
    | grep -v -e ":${hash}\$" -e ':latest$' | xargs -r podman rmi >/dev/null 2>&1 || true
echo "lab image $image built"
