#!/usr/bin/env bash
# The dev-time check against Proxmox VE's own code. Optional, never part of `make test` (CI
# cannot fetch Proxmox's sources); what it establishes is kept as fixtures that `make test` uses.
#
#   scripts/proxmox-check.sh sources   the pinned Proxmox sources, from bare git repositories
#   scripts/proxmox-check.sh facts     facts JSON per release (tests/unit/.../fixtures/proxmox/)
#   scripts/proxmox-check.sh check     the plugin through the real PVE::Storage and qemu-server
#                                      against a real pvesan-service, tgtd and qemu-io
#   scripts/proxmox-check.sh all       the three in turn (make proxmox-check)
#   scripts/proxmox-check.sh run CMD.. a command in the same environment (pvesm is on PATH)
#
# Where the sources come from: PVE_SOURCES (default .cache/proxmox) holds one directory per
# repository and version, e.g. pve-storage-9.1.7/, each with a .commit file. `sources` fills it
# with `git archive` from bare clones in PVE_MIRROR (default /work/.mirror, laid out as
# <owner>+<name>/repo, which is what the search tool's fetch of github:proxmox/<name> gives), or
# from any clone: PVE_MIRROR=/path/with/<owner>+<name>/repo, or
#   git clone --bare https://git.proxmox.com/git/pve-storage.git $PVE_MIRROR/proxmox+pve-storage/repo
# Nothing of Proxmox is copied into the repository.
#
# What cannot run here and what stands in for it (tests/proxmox/lib/): pmxcfs (PVE::IPCC answers
# from /etc/pve as a plain directory; PVE::Cluster itself is real), pve-access-control's
# PVE::RPCEnvironment (root@pam, every check granted; PVE::RESTEnvironment is real), librados
# (PVE::RADOS dies if used). Everything runs in a private mount namespace with overlays on /etc
# and /usr/share/perl5, so /etc/pve and /usr/share/perl5/PVE/Storage/Custom exist only there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sources=${PVE_SOURCES:-$root/.cache/proxmox}
mirror=${PVE_MIRROR:-/work/.mirror}
facts_dir=$root/tests/unit/plugins/module_utils/fixtures/proxmox

# release -> "repository version commit" lines. 9.1 is what the plugin is checked against;
# 8.4 gives the facts of the previous major release (schema only: its qemu-server is not run).
declare -A release=(
    [9.1]="pve-storage 9.1.7 0c56bad8b2a7d69e5ce2c243651fe830d6caa936
pve-common 9.2.1 f665029eac78022e81810ab2e44eace57ade13fb
pve-cluster 9.1.6 7091d92e594952dba65c1e57568b3d7cc244e960
qemu-server 9.2.6 e6352be67f70042a7433a3a3c712b36d02f9f7cb
pve-guest-common 6.0.2 4a8f6cbf78e1b6992ef77facb4ff2ab3372999e7
pve-apiclient 3.4.2 a56152820da7d97b2c2b1f9dc56d4775db50ec20"
    [8.4]="pve-storage 8.3.8 1af4790d7ef4caacc9db10cc3c5f64575f13e966
pve-common 8.3.8 91962804ffce2cdb70261f03b2df5c0b7a0a2c4d
pve-cluster 8.1.3 e18c7928d447ef1450246d944ba5b28a1c5c75ac
pve-apiclient 3.3.2 94d38f0aba67ad04bf20159f605d5f7380cf7b58"
)
releases=(9.1 8.4)

# Debian packages of the Perl modules pve-storage, pve-common, pve-cluster and qemu-server load,
# PadWalker for reading a file lexical of PVE/Storage.pm, and the data path tools.
perl_packages=(
    libjson-perl libjson-xs-perl libnet-ip-perl libuuid-perl libclone-perl liburi-perl
    libstring-shellquote-perl libfilesys-df-perl liblinux-inotify2-perl libnet-ssleay-perl
    libio-socket-ssl-perl libcrypt-openssl-random-perl libcrypt-openssl-rsa-perl libdigest-hmac-perl
    libtimedate-perl libdevel-cycle-perl libencode-locale-perl libhttp-message-perl libwww-perl
    libnetaddr-ip-perl libanyevent-perl libfile-chdir-perl libxml-libxml-perl libnet-dbus-perl
    libposix-strptime-perl libio-multiplex-perl libpadwalker-perl libyaml-libyaml-perl
    libterm-readline-gnu-perl librrds-perl libnbd-bin
    qemu-utils qemu-block-extra tgt xfsprogs open-iscsi
)

log() { echo "proxmox-check: $*" >&2; }

src_dir() { echo "$sources/$1-$2"; }

cmd_sources() {
    local rel repo version commit dir git_dir missing=0
    for rel in "${releases[@]}"; do
        while read -r repo version commit; do
            dir=$(src_dir "$repo" "$version")
            if [[ -f $dir/.commit && $(cat "$dir/.commit") == "$commit" ]]; then
                continue
            fi
            git_dir=$mirror/proxmox+$repo/repo
            if ! git --git-dir="$git_dir" cat-file -e "$commit^{commit}" 2>/dev/null; then
                log "missing: $repo $version ($commit): fetch github:proxmox/$repo with the search tool,"
                log "  or: git clone --bare https://git.proxmox.com/git/$repo.git $git_dir"
                missing=1
                continue
            fi
            rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
            git --git-dir="$git_dir" archive "$commit" | tar -C "$dir.tmp" -x
            echo "$commit" >"$dir.tmp/.commit"
            rm -rf "$dir" && mv "$dir.tmp" "$dir"
            log "$repo $version ($commit) -> $dir"
        done <<<"${release[$rel]}"
    done
    return "$missing"
}

cmd_deps() {
    local p missing=()
    for p in "${perl_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# PERL5LIB for a release: the stand-ins first, then the generated IPCConst, then the sources.
perl_lib() {
    local rel=$1 repo version commit dirs=() build=$root/.cache/proxmox-build/$1
    while read -r repo version commit; do
        dirs+=("$(src_dir "$repo" "$version")/src")
    done <<<"${release[$rel]}"
    # PVE::Cluster::IPCConst is generated at build time from pmxcfs's header, as Proxmox's
    # Makefile does it.
    local cluster
    cluster=$(printf '%s\n' "${dirs[@]}" | grep '/pve-cluster-')
    mkdir -p "$build/PVE/Cluster"
    awk -f "$cluster/PVE/Cluster/IPCConst.pm.awk" "$cluster/pmxcfs/cfs-ipc-ops.h" >"$build/PVE/Cluster/IPCConst.pm"
    local IFS=:
    echo "$root/tests/proxmox/lib:$build:${dirs[*]}"
}

source_dirs() {
    local repo version commit out=()
    while read -r repo version commit; do out+=("$(src_dir "$repo" "$version")"); done <<<"${release[$1]}"
    local IFS=:
    echo "${out[*]}"
}

# Run "$@" in a private mount namespace where /etc and /usr/share/perl5 are overlays, /etc/pve
# is a plain directory laid out like pmxcfs's, and our plugin is installed where pve-storage's
# loader looks for custom plugins.
in_namespace() {
    local tmp
    tmp=$(mktemp -d /tmp/proxmox-check.XXXXXX)
    # shellcheck disable=SC2064  # expand now: the trap must remove this run's directory
    trap "rm -rf '$tmp'" RETURN
    # shellcheck disable=SC2016  # the inner script expands its own variables
    unshare --mount --propagation private bash -c '
        set -euo pipefail
        tmp=$1 root=$2; shift 2
        mkdir -p "$tmp"/{etc,perl5}/{upper,work}
        mount -t overlay overlay -o "lowerdir=/etc,upperdir=$tmp/etc/upper,workdir=$tmp/etc/work" /etc
        mount -t overlay overlay -o "lowerdir=/usr/share/perl5,upperdir=$tmp/perl5/upper,workdir=$tmp/perl5/work" /usr/share/perl5
        node=$(hostname -s)
        mkdir -p /etc/pve/priv/lock /etc/pve/priv/storage "/etc/pve/nodes/$node/qemu-server"
        ln -sfn "nodes/$node" /etc/pve/local    # pmxcfs: a quorate node has this link
        mount -t tmpfs -o mode=0755 tmpfs /run    # for the status cache of the plugin, sockets of tgtd
        mkdir -p /run/lock/pve-manager    # local storage locks (pve-manager makes it on a node)
        mkdir -p /usr/share/perl5/PVE/Storage/Custom
        install -m 0644 "$root/roles/pve_host/files/PVESANPlugin.pm" /usr/share/perl5/PVE/Storage/Custom/
        "$@"
    ' in-namespace "$tmp" "$root" "$@"
}

cmd_facts() {
    local rel out
    mkdir -p "$facts_dir"
    for rel in "${releases[@]}"; do
        out=$facts_dir/pve-$rel.json
        # a fixed hash seed: Proxmox writes content/nodes lists in hash order
        PERL5LIB=$(perl_lib "$rel") PVE_SOURCE_DIRS=$(source_dirs "$rel") PVE_SOURCES_ROOT=$sources \
            PERL_HASH_SEED=0 PERL_PERTURB_KEYS=0 in_namespace perl "$root/tests/proxmox/facts.pl" "$root/tests/proxmox/parse-cases.json" >"$out.tmp"
        mv "$out.tmp" "$out"
        log "facts of Proxmox VE $rel -> ${out#"$root"/}"
    done
}

# A pvesm of the pinned sources on PATH: storage_migrate pipes `pvesm export | pvesm import`.
pvesm_bin() {
    local rel=$1 bin=$root/.cache/proxmox-build/$1/bin storage
    storage=$(src_dir pve-storage "$(awk '$1 == "pve-storage" {print $2}' <<<"${release[$rel]}")")
    mkdir -p "$bin"
    printf '#!/bin/sh\nexec perl %s/src/bin/pvesm "$@"\n' "$storage" >"$bin/pvesm"
    chmod +x "$bin/pvesm"
    echo "$bin"
}

cmd_run() {
    local rel=9.1
    PATH=$(pvesm_bin "$rel"):$PATH PERL5LIB=$(perl_lib "$rel"):$root/tests/perl/lib \
        PVE_SOURCE_DIRS=$(source_dirs "$rel") in_namespace "$@"
}

cmd_check() {
    local rel=9.1
    PATH=$(pvesm_bin "$rel"):$PATH PERL5LIB=$(perl_lib "$rel"):$root/tests/perl/lib \
        PVE_SOURCE_DIRS=$(source_dirs "$rel") in_namespace prove -v "$root/tests/proxmox/check.t"
}

case "${1:-}" in
    sources) cmd_sources ;;
    deps) cmd_deps ;;
    facts) cmd_sources && cmd_deps && cmd_facts ;;
    check) cmd_sources && cmd_deps && cmd_check ;;
    all) cmd_sources && cmd_deps && cmd_facts && cmd_check ;;
    run) shift; cmd_run "$@" ;;
    *) sed -n '2,27p' "$0"; exit 2 ;;
esac
