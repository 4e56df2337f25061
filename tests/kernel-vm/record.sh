#!/usr/bin/env bash
# Runs INSIDE the kernel VM (scripts/kernel-vm.sh record [SECTION..]), from the checkout, which
# the VM sees at the same path. Runs the exact commands our code runs against real ZFS, LVM thin,
# open-iscsi and dm-multipath and keeps what they print byte for byte:
#   <dir>/<name>.out   stdout (omitted when empty)
#   <dir>/<name>.err   stderr (omitted when empty)
#   <dir>/commands.tsv one line per run: name <TAB> exit status <TAB> the command line (sh quoting)
#   <dir>/versions.txt kernel and tool versions of the recording
# Sections: zfs_pool zfs lvmthin iscsi (default: all). Each section starts from a clean slate
# and leaves none of its pools, VGs or sessions behind.
set -euo pipefail
repo=${KVM_REPO:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$repo"
sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(zfs_pool zfs_pool_module zfs lvmthin iscsi iscsi_chap)

ZP_DIR=$repo/tests/unit/plugins/module_utils/fixtures/zfs_pool/kernel-vm
ZFS_DIR=$repo/service/tests/fixtures/backends/zfs
LVM_DIR=$repo/service/tests/fixtures/backends/lvmthin
# shellcheck disable=SC2034  # used by record-iscsi.sh
ISCSI_DIR=$repo/tests/unit/plugins/modules/fixtures/iscsi/kernel-vm
# shellcheck disable=SC2034  # used by record-iscsi.sh
ISCSI_CHAP_DIR=$repo/tests/unit/plugins/modules/fixtures/iscsi/kernel-vm-chap

# The checkout's .venv points at the host's Python; the guest runs Debian's python3 (also 3.11)
# with the .venv's packages, the collection and the service on PYTHONPATH.
PY=(env "PYTHONPATH=$repo/.cache/collections:$repo/.venv/lib/python3.11/site-packages:$repo/service/src" python3)

# The virtio disks qemu gives the guest (serial=pvesan-dN).
D() { echo "/dev/disk/by-id/virtio-pvesan-d$1"; }

quote() {
    local w out=()
    for w in "$@"; do
        if [[ $w =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then out+=("$w"); else out+=("'${w//\'/\'\\\'\'}'"); fi
    done
    echo "${out[*]}"
}

# rec DIR NAME CMD...: run CMD, keep its output byte for byte, note the command and exit status.
rec() {
    local dir=$1 name=$2 rc=0
    shift 2
    "$@" >"$dir/$name.out" 2>"$dir/$name.err" || rc=$?
    [ -s "$dir/$name.out" ] || rm -f "$dir/$name.out"
    [ -s "$dir/$name.err" ] || rm -f "$dir/$name.err"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(quote "$@")" >>"$dir/commands.tsv"
    echo "  $name: rc=$rc  $(quote "$@")" >&2
}

# Set up / tear down without recording; failures show but do not stop the run.
run() { "$@" || echo "  (setup) rc=$?: $(quote "$@")" >&2; }

fresh() {
    # start a fixture directory's recordings afresh (only the files this script writes)
    local dir=$1
    mkdir -p "$dir"
    if [ -f "$dir/commands.tsv" ]; then
        cut -f1 "$dir/commands.tsv" | while read -r n; do rm -f "$dir/$n.out" "$dir/$n.err"; done
    fi
    : >"$dir/commands.tsv"
    {
        echo "recorded: $(date -u +%Y-%m-%dT%H:%MZ) in the kernel VM (scripts/kernel-vm.sh, qemu TCG)"
        echo "kernel: $(uname -r) ($(uname -v))"
        dpkg-query -W -f '${Package} ${Version}\n' zfsutils-linux zfs-dkms lvm2 thin-provisioning-tools \
            open-iscsi multipath-tools sg3-utils 2>/dev/null
        if [ -e /sys/module/zfs/version ]; then echo "zfs kmod: $(cat /sys/module/zfs/version)"; fi
    } >"$dir/versions.txt"
}

wipe_disks() {
    local n
    udevadm settle
    for n in $(seq 1 12); do
        [ -e "$(D "$n")" ] || continue
        run wipefs -q -a "$(D "$n")"-part* >/dev/null 2>&1
        run wipefs -q -a "$(D "$n")" >/dev/null 2>&1
        run dd if=/dev/zero of="$(D "$n")" bs=1M count=4 status=none
    done
    udevadm settle
    sleep 1
}

zpool_destroy_all() {
    local p
    for p in $(zpool list -H -o name 2>/dev/null); do run zpool destroy -f "$p"; done
}

# --- zfs_pool module: plugins/module_utils/_zfs_pool.py, plugins/modules/zfs_pool.py ------------
pool_state() {
    # what the module reads about a pool: zpool status -P -L (resolved device nodes, to compare)
    # and zpool status -P (the vdev paths as zpool keeps them, to name vdevs in attach/remove)
    local pool=$1 tag=$2
    rec "$ZP_DIR" "$tag.status" zpool status -P -L "$pool"
    rec "$ZP_DIR" "$tag.status-paths" zpool status -P "$pool"
}

section_zfs_pool() {
    local dir=$ZP_DIR
    echo "== zfs_pool -> $dir" >&2
    modprobe zfs
    zpool_destroy_all
    wipe_disks
    fresh "$dir"
    rec "$dir" by-id.ls ls -l /dev/disk/by-id
    rec "$dir" by-path.ls ls -l /dev/disk/by-path
    rec "$dir" version zfs version
    rec "$dir" list-missing zpool list -H -o name tank

    # stripe of two disks named by-id: the by-id idempotence case.
    rec "$dir" stripe.create zpool create stripe "$(D 1)" "$(D 2)"
    pool_state stripe stripe
    rec "$dir" stripe.list-name zpool list -H -o name stripe
    rec "$dir" by-id-after.ls ls -l /dev/disk/by-id
    rec "$dir" sys-block-vdb.ls ls /sys/class/block/vdb
    # zpool add of a third disk by short kernel name, then attach: the stripe disk becomes a mirror.
    rec "$dir" stripe.add zpool add stripe vdd
    # attach and remove name the vdevs the way the module does: by the path zpool status -P shows.
    # The resolved name zpool status -P -L shows is refused ("no such device in pool").
    rec "$dir" stripe.attach-resolved zpool attach stripe /dev/vdb1 "$(D 5)"
    rec "$dir" stripe.attach zpool attach stripe "$(D 1)-part1" "$(D 5)"
    run zpool wait -t resilver stripe
    pool_state stripe stripe-attached
    rec "$dir" stripe.remove zpool remove stripe /dev/vdd1  # added as vdd: zpool keeps /dev/vdd1
    run zpool wait -t remove stripe
    pool_state stripe stripe-removed
    rec "$dir" stripe.destroy zpool destroy stripe
    wipe_disks

    # RAID10 with log mirror, cache and spare; ashift, autotrim and root dataset properties.
    rec "$dir" tank.create zpool create -o ashift=12 -o autotrim=on -O atime=off -O compression=lz4 -O xattr=sa \
        tank mirror "$(D 1)" "$(D 2)" mirror "$(D 3)" "$(D 4)" log mirror "$(D 5)" "$(D 6)" cache "$(D 7)" spare "$(D 8)"
    pool_state tank tank
    rec "$dir" tank.zpool-get zpool get -H -p ashift,autotrim tank
    rec "$dir" tank.zpool-get-comment zpool get -H -p autoexpand,comment,failmode tank
    rec "$dir" tank.zfs-get zfs get -H -p atime,compression,recordsize tank
    rec "$dir" tank.zfs-get-xattr zfs get -H -p atime,compression,xattr tank
    rec "$dir" tank.zpool-list zpool list -H -p -o name,size,alloc,free,health tank
    rec "$dir" tank.list-name zpool list -H -o name tank
    rec "$dir" tank.set-autotrim zpool set autotrim=off tank
    rec "$dir" tank.set-recordsize zfs set recordsize=1048576 tank
    rec "$dir" tank.zfs-get-set zfs get -H -p atime,compression,recordsize tank
    rec "$dir" tank.add-mirror zpool add -o ashift=12 tank mirror "$(D 9)" "$(D 10)"
    pool_state tank tank-added
    rec "$dir" tank.remove-cache-resolved zpool remove tank /dev/vdh1
    rec "$dir" tank.remove-cache zpool remove tank "$(D 7)-part1"
    rec "$dir" tank.remove-log zpool remove tank mirror-2
    pool_state tank tank-removed
    rec "$dir" tank.export zpool export tank
    rec "$dir" tank.list-exported zpool list -H -o name tank
    rec "$dir" tank.import-list zpool import
    rec "$dir" tank.import zpool import tank
    pool_state tank tank-imported
    rec "$dir" tank.destroy zpool destroy tank
    rec "$dir" import-none zpool import
    wipe_disks

    # raidz1 by short kernel names
    rec "$dir" rz1.create zpool create rz1 raidz1 vdb vdc vdd
    pool_state rz1 raidz1
    run zpool destroy rz1
    wipe_disks
    # raidz2 + special mirror + dedup mirror: first without -f (mismatched replication), then -f
    rec "$dir" rz2.create zpool create rz2 raidz2 "$(D 1)" "$(D 2)" "$(D 3)" "$(D 4)" \
        special mirror "$(D 5)" "$(D 6)" dedup mirror "$(D 7)" "$(D 8)"
    if ! zpool list rz2 >/dev/null 2>&1; then
        rec "$dir" rz2.create-f zpool create -f rz2 raidz2 "$(D 1)" "$(D 2)" "$(D 3)" "$(D 4)" \
            special mirror "$(D 5)" "$(D 6)" dedup mirror "$(D 7)" "$(D 8)"
    fi
    pool_state rz2 raidz2
    rec "$dir" rz2.add-special zpool add rz2 special mirror "$(D 9)" "$(D 10)"
    pool_state rz2 raidz2-added
    run zpool destroy rz2
    wipe_disks
    # raidz3 of 5
    rec "$dir" rz3.create zpool create rz3 raidz3 "$(D 1)" "$(D 2)" "$(D 3)" "$(D 4)" "$(D 5)"
    pool_state rz3 raidz3
    run zpool destroy rz3
    wipe_disks
    # dRAID with every parameter, and with OpenZFS's defaults
    # shellcheck disable=SC2046  # one word per disk
    rec "$dir" draid2.create zpool create bulk draid2:4d:11c:1s $(for n in $(seq 1 11); do D "$n"; done)
    pool_state bulk draid2
    run zpool destroy bulk
    wipe_disks
    rec "$dir" draid1-defaults.create zpool create dflt draid1 "$(D 1)" "$(D 2)" "$(D 3)" "$(D 4)" "$(D 5)"
    pool_state dflt draid1-defaults
    run zpool destroy dflt
    wipe_disks
    rec "$dir" draid1-spare.create zpool create dsp draid1:2s "$(D 1)" "$(D 2)" "$(D 3)" "$(D 4)" "$(D 5)" "$(D 6)"
    pool_state dsp draid1-spare
    run zpool destroy dsp
    wipe_disks
    rec "$dir" draid3.create zpool create d3 draid3:2d "$(D 1)" "$(D 2)" "$(D 3)" "$(D 4)" "$(D 5)" "$(D 6)"
    pool_state d3 draid3
    run zpool destroy d3
    wipe_disks

    # Files and loop devices; import from a directory
    local img=/var/tmp/pvesan-zfs
    run rm -rf "$img"
    mkdir -p "$img"
    truncate -s 256M "$img/disk0.img" "$img/disk1.img" "$img/disk2.img"
    rec "$dir" files.create zpool create lab mirror "$img/disk0.img" "$img/disk1.img"
    pool_state lab files
    rec "$dir" files.export zpool export lab
    rec "$dir" files.import-list-d zpool import -d "$img"
    rec "$dir" files.import-d zpool import -d "$img" lab
    pool_state lab files-imported
    run zpool destroy lab
    local loop
    loop=$(losetup -f --show "$img/disk2.img")
    rec "$dir" loop.create zpool create lp "$loop"
    pool_state lp loop
    rec "$dir" loop.sys-block.ls ls "/sys/class/block/$(basename "$loop")"
    run zpool destroy lp
    run losetup -d "$loop"
    run rm -rf "$img"
    wipe_disks

    # Partitions by by-id -partN link (a disk split for log and cache)
    run sgdisk --zap-all "$(D 3)" >/dev/null 2>&1 || true
    printf 'label: gpt\n,100M\n,\n' | sfdisk -q "$(D 3)" >/dev/null
    udevadm settle
    rec "$dir" parts.create zpool create parts mirror "$(D 1)" "$(D 2)" log "$(D 3)-part1" cache "$(D 3)-part2"
    pool_state parts parts
    rec "$dir" parts.by-id.ls ls -l /dev/disk/by-id
    run zpool destroy parts
    wipe_disks

}

# shellcheck disable=SC2086  # the disk paths spliced into the JSON have no blanks
section_zfs_pool_module() {
    modprobe zfs
    zpool_destroy_all
    wipe_disks
    # ansible-core from the checkout's .venv (same Python 3.11 in the guest)
    local dir=$ZP_DIR/module
    mkdir -p "$dir"
    rm -f "$dir"/*.json
    local coll=$repo/.cache/collections
    local args
    modrun() {
        local name=$1 json=$2 rc=0
        printf '{"ANSIBLE_MODULE_ARGS": %s}' "$json" >"/tmp/args-$name.json"
        (cd "$coll" && "${PY[@]}" -m ansible_collections.pvesan.storage.plugins.modules.zfs_pool \
            "/tmp/args-$name.json") >"$dir/$name.json" 2>"$dir/$name.stderr" || rc=$?
        [ -s "$dir/$name.stderr" ] || rm -f "$dir/$name.stderr"
        printf '%s\t%s\t%s\n' "$name" "$rc" "$(printf '%s' "$json" | tr '\n' ' ' | tr -s ' ')" >>"$dir/runs.tsv"
        echo "  module $name: rc=$rc $(head -c 300 "$dir/$name.json")" >&2
    }
    : >"$dir/runs.tsv"
    local d1 d2 d3 d4 d5 d6 d7 d8
    d1=$(D 1) d2=$(D 2) d3=$(D 3) d4=$(D 4) d5=$(D 5) d6=$(D 6) d7=$(D 7) d8=$(D 8)
    # attach to and remove from a pool made with by-id links (zpool wants the paths it keeps)
    modrun stripe-create '{"name": "stripe", "vdevs": [{"disks": ["'$d1'", "'$d2'"]}]}'
    args='{"name": "stripe", "force": true, "vdevs": [{"type": "mirror", "disks": ["'$d1'", "'$d5'"]}, {"disks": ["'$d2'"]}]}'
    modrun stripe-attach "$args"
    run zpool wait -t resilver stripe
    modrun stripe-second "$args"
    modrun stripe-cache-add '{"name": "stripe", "cache": ["'$d7'"]}'
    modrun stripe-cache-remove '{"name": "stripe", "cache": [], "allow_destroy": true}'
    modrun stripe-destroy '{"name": "stripe", "state": "absent", "allow_destroy": true}'
    wipe_disks
    # the same layout created at once: a mirror and a single disk (needs force: mismatched replication)
    modrun mixed-create "$args"
    modrun mixed-second "$args"
    modrun mixed-destroy '{"name": "stripe", "state": "absent", "allow_destroy": true}'
    wipe_disks
    args='{"name": "tank", "ashift": 12, "autotrim": true,
      "vdevs": [{"type": "mirror", "disks": ["'$d1'", "'$d2'"]}, {"type": "mirror", "disks": ["'$d3'", "'$d4'"]}],
      "log": [{"type": "mirror", "disks": ["'$d5'", "'$d6'"]}], "cache": ["'$d7'"], "spares": ["'$d8'"],
      "filesystem_properties": {"compression": "lz4", "atime": "off", "xattr": "sa", "recordsize": "1M"}}'
    modrun tank-create "$args"
    modrun tank-second "$args"
    modrun tank-short-names '{"name": "tank", "ashift": 12, "autotrim": true,
      "vdevs": [{"type": "mirror", "disks": ["vdb", "vdc"]}, {"type": "mirror", "disks": ["/dev/vdd", "/dev/vde"]}],
      "log": [{"type": "mirror", "disks": ["vdf", "vdg"]}], "cache": ["vdh"], "spares": ["vdi"],
      "filesystem_properties": {"compression": "lz4", "atime": "off", "xattr": "sa", "recordsize": "1M"}}'
    modrun tank-export '{"name": "tank", "state": "exported"}'
    modrun tank-import '{"name": "tank", "state": "present"}'
    modrun tank-destroy '{"name": "tank", "state": "absent", "allow_destroy": true}'
    wipe_disks
    local disks=""
    for n in $(seq 1 11); do disks="$disks\"$(D "$n")\","; done
    args='{"name": "bulk", "vdevs": [{"type": "draid2", "draid_data": 4, "draid_spares": 1, "disks": ['${disks%,}']}]}'
    modrun draid-create "$args"
    modrun draid-second "$args"
    modrun draid-destroy '{"name": "bulk", "state": "absent", "allow_destroy": true}'
    wipe_disks
    args='{"name": "dflt", "vdevs": [{"type": "draid1", "disks": ["'$d1'", "'$d2'", "'$d3'", "'$d4'", "'$d5'"]}]}'
    modrun draid-defaults-create "$args"
    modrun draid-defaults-second "$args"
    modrun draid-defaults-destroy '{"name": "dflt", "state": "absent", "allow_destroy": true}'
    wipe_disks
    args='{"name": "rz2", "force": true, "vdevs": [{"type": "raidz2", "disks": ["'$d1'", "'$d2'", "'$d3'", "'$d4'"]}],
      "special": [{"type": "mirror", "disks": ["'$d5'", "'$d6'"]}], "dedup": [{"type": "mirror", "disks": ["'$d7'", "'$d8'"]}]}'
    modrun rz2-create "$args"
    modrun rz2-second "$args"
    modrun rz2-destroy '{"name": "rz2", "state": "absent", "allow_destroy": true}'
}

# --- service zfs backend: service/src/pvesan_service/backends/zfs.py -------------------------
section_zfs() {
    local dir=$ZFS_DIR ds=rpool/pvesan
    local v1=v-0a1b2c3d4e5f6071 v2=v-0c2d3e4f50617283 s1=s-1111111111111111 s2=s-2222222222222222
    echo "== zfs backend -> $dir" >&2
    modprobe zfs
    zpool_destroy_all
    wipe_disks
    fresh "$dir"
    run zpool create -O compression=lz4 rpool "$(D 12)"
    run zfs create "$ds"
    rec "$dir" get-type-dataset zfs get -H -p -o value type "$ds"
    rec "$dir" get-used-available zfs get -H -p -o value used,available "$ds"
    rec "$dir" get-missing-dataset zfs get -H -p -o value type rpool/nope
    rec "$dir" create-thin zfs create -s -V 34359754752 -o volblocksize=16K -o compression=lz4 "$ds/$v1"
    rec "$dir" settle udevadm settle --timeout=10 "--exit-if-exists=/dev/zvol/$ds/$v1"
    rec "$dir" zvol.ls ls -l "/dev/zvol/$ds/"
    rec "$dir" get-type-zvol zfs get -H -p -o value type "$ds/$v1"
    rec "$dir" create-exists-same zfs create -V 34359754752 "$ds/$v1"
    rec "$dir" create-exists zfs create -V 34359738368 "$ds/$v1"
    rec "$dir" create-bad-blocksize zfs create -s -V 1048576 -o volblocksize=12K "$ds/v-badblocksize"
    rec "$dir" create-not-multiple zfs create -s -V 1000000 -o volblocksize=16K "$ds/v-notmultiple"
    rec "$dir" get-volsize-not-multiple zfs get -H -p -o value volsize,volblocksize "$ds/v-notmultiple"
    run zfs destroy "$ds/v-notmultiple" 2>/dev/null
    rec "$dir" create-nospace zfs create -V 1073741824 "$ds/$v2"
    rec "$dir" create-thin-default zfs create -s -V 1073741824 -o compression=lz4 "$ds/$v2"
    rec "$dir" settle-default udevadm settle --timeout=10 "--exit-if-exists=/dev/zvol/$ds/$v2"
    rec "$dir" get-volblocksize-default zfs get -H -p -o value volblocksize "$ds/$v2"
    rec "$dir" get-volsize zfs get -H -p -o value volsize "$ds/$v1"
    run dd if=/dev/urandom of="/dev/zvol/$ds/$v1" bs=1M count=2 oflag=direct status=none
    run sync
    rec "$dir" get-used-volume zfs get -H -p -o value used "$ds/$v1"
    rec "$dir" list-volumes zfs list -H -p -o name -t volume -d 1 "$ds"
    rec "$dir" list-volumes-used zfs list -H -p -o name,used -t volume -d 1 "$ds"
    rec "$dir" get-missing zfs get -H -p -o value type "$ds/v-ffffffffffffffff"
    rec "$dir" get-missing-volsize zfs get -H -p -o value volsize "$ds/v-ffffffffffffffff"
    rec "$dir" set-volsize zfs set volsize=68719476736 "$ds/$v1"
    rec "$dir" get-volsize-grown zfs get -H -p -o value volsize "$ds/$v1"
    rec "$dir" snapshot zfs snapshot "$ds/$v1@$s1"
    rec "$dir" snapshot-exists zfs snapshot "$ds/$v1@$s1"
    rec "$dir" snapshot-missing-volume zfs snapshot "$ds/v-ffffffffffffffff@$s1"
    rec "$dir" snapshot2 zfs snapshot "$ds/$v1@$s2"
    rec "$dir" list-snapshots zfs list -H -p -o name -t snapshot -s createtxg -d 1 "$ds/$v1"
    rec "$dir" list-snapshots-missing zfs list -H -p -o name -t snapshot -s createtxg -d 1 "$ds/v-ffffffffffffffff"
    run zfs destroy -r "$ds/$v2"
    rec "$dir" clone zfs clone -o compression=zstd "$ds/$v1@$s1" "$ds/$v2"
    rec "$dir" settle-clone udevadm settle --timeout=10 "--exit-if-exists=/dev/zvol/$ds/$v2"
    rec "$dir" clone-exists zfs clone -o compression=zstd "$ds/$v1@$s1" "$ds/$v2"
    rec "$dir" clone-missing-snapshot zfs clone "$ds/$v1@s-9999999999999999" "$ds/v-0d0d0d0d0d0d0d0d"
    rec "$dir" list-volumes-clone zfs list -H -p -o name -t volume -d 1 "$ds"
    rec "$dir" rollback-newer zfs rollback "$ds/$v1@$s1"
    rec "$dir" rollback-missing zfs rollback "$ds/$v1@s-9999999999999999"
    rec "$dir" rollback zfs rollback "$ds/$v1@$s2"
    rec "$dir" destroy-snapshot-clones zfs destroy "$ds/$v1@$s1"
    rec "$dir" destroy-clones zfs destroy -r "$ds/$v1"
    rec "$dir" destroy-snapshot zfs destroy "$ds/$v1@$s2"
    rec "$dir" destroy-snapshot-missing zfs destroy "$ds/$v1@$s2"
    rec "$dir" destroy-snapshot-missing-volume zfs destroy "$ds/v-ffffffffffffffff@$s2"
    # a zvol still open (as right after the target closed it, while udev probes it)
    exec 7<"/dev/zvol/$ds/$v2"
    rec "$dir" destroy-busy zfs destroy -r "$ds/$v2"
    exec 7<&-
    rec "$dir" destroy-clone zfs destroy -r "$ds/$v2"
    rec "$dir" destroy zfs destroy -r "$ds/$v1"
    rec "$dir" destroy-missing zfs destroy -r "$ds/v-ffffffffffffffff"
    rec "$dir" list-volumes-empty zfs list -H -p -o name -t volume -d 1 "$ds"
    rec "$dir" list-missing-dataset zfs list -H -p -o name -t volume -d 1 rpool/nope
    # The opt-in real test of the service suite, against this ZFS.
    if [ -d "$repo/.venv" ]; then
        echo "  pytest test_real_zfs_scenario:" >&2
        (cd "$repo" && PVESAN_REAL_ZFS=$ds "${PY[@]}" -m pytest -q -p no:cacheprovider \
            service/tests/test_backends_zfs.py -k real 2>&1 | tail -5) >&2 || true
    fi
    run zpool destroy rpool
    wipe_disks
}

# --- service lvmthin backend: service/src/pvesan_service/backends/lvmthin.py -----------------
section_lvmthin() {
    local dir=$LVM_DIR
    local v1=v-0a1b2c3d4e5f6071 v2=v-0c2d3e4f50617283 s1=s-1111111111111111
    local snap1=snap_${v1}_${s1}
    # shellcheck disable=SC2054
    local lvs=(lvs --reportformat json --units b --nosuffix -o lv_name,lv_size,data_percent,pool_lv,origin,lv_attr)
    echo "== lvmthin backend -> $dir" >&2
    run vgremove -q -y -f pve 2>/dev/null
    rm -rf /dev/pve  # leftovers of an earlier failed run
    wipe_disks
    fresh "$dir"
    run pvcreate -q "$(D 11)"
    run vgcreate -q pve "$(D 11)"
    run lvcreate -q -y -L 64M -n root pve
    rec "$dir" lvs-missing-pool "${lvs[@]}" pve/data
    rec "$dir" lvcreate-pool lvcreate -q -y -T -L 256M pve/data
    rec "$dir" lvs-pool-empty "${lvs[@]}" pve/data
    rec "$dir" lvs-missing-vg "${lvs[@]}" nope/data
    rec "$dir" lvs-not-pool "${lvs[@]}" pve/root
    rec "$dir" lvcreate lvcreate -q -y -n "$v1" -V 4294967296b -T pve/data
    rec "$dir" lvcreate-exists lvcreate -q -y -n "$v1" -V 4294967296b -T pve/data
    rec "$dir" lvcreate-odd lvcreate -q -y -n v-0e0e0e0e0e0e0e0e -V 1000000b -T pve/data
    rec "$dir" lvcreate-odd-rounded lvcreate -q -y -n v-0e0e0e0e0e0e0e0e -V 1000448b -T pve/data
    rec "$dir" lvs-odd "${lvs[@]}" pve/v-0e0e0e0e0e0e0e0e
    run lvremove -q -y pve/v-0e0e0e0e0e0e0e0e >/dev/null
    rec "$dir" vgs-extent vgs --noheadings --units b --nosuffix -o vg_extent_size pve
    [ -b "/dev/pve/$v1" ] && run dd if=/dev/urandom of="/dev/pve/$v1" bs=1M count=16 oflag=direct status=none
    rec "$dir" lvs-volume "${lvs[@]}" "pve/$v1"
    rec "$dir" lvs-pool "${lvs[@]}" pve/data
    rec "$dir" lvs-missing "${lvs[@]}" pve/v-ffffffffffffffff
    rec "$dir" lvextend lvextend -q -L 8589934592b "pve/$v1"
    rec "$dir" lvs-volume-grown "${lvs[@]}" "pve/$v1"
    rec "$dir" snapshot lvcreate -q -y -s -n "$snap1" "pve/$v1"
    rec "$dir" snapshot-exists lvcreate -q -y -s -n "$snap1" "pve/$v1"
    rec "$dir" snapshot-missing-volume lvcreate -q -y -s -n snap_v-ffffffffffffffff_$s1 pve/v-ffffffffffffffff
    rec "$dir" clone lvcreate -q -y -s -kn -ay -n "$v2" "pve/$snap1"
    rec "$dir" clone-exists lvcreate -q -y -s -kn -ay -n "$v2" "pve/$snap1"
    rec "$dir" clone-missing-snapshot lvcreate -q -y -s -kn -ay -n v-0d0d0d0d0d0d0d0d "pve/snap_${v1}_s-9999999999999999"
    rec "$dir" lvs-vg "${lvs[@]}" pve
    # in use: a process holds the device open
    # shellcheck disable=SC2217  # sleep only holds the device open
    sleep 60 <"/dev/pve/$v1" &
    local holder=$!
    sleep 1
    rec "$dir" lvremove-in-use lvremove -q -y "pve/$v1"
    kill "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
    # rollback as the backend does it: remove the LV, new thin snapshot of the snapshot
    rec "$dir" rollback-lvremove lvremove -q -y "pve/$v1"
    rec "$dir" rollback-lvcreate lvcreate -q -y -s -kn -ay -n "$v1" "pve/$snap1"
    rec "$dir" lvs-vg-after-rollback "${lvs[@]}" pve
    rec "$dir" lvremove-snapshot lvremove -q -y "pve/$snap1"
    rec "$dir" lvremove-clone lvremove -q -y "pve/$v2"
    rec "$dir" lvremove lvremove -q -y "pve/$v1"
    rec "$dir" lvremove-missing lvremove -q -y "pve/$snap1"
    rec "$dir" lvremove-missing-vg lvremove -q -y "nope/$v1"
    # overcommit past the pool: the warning when the sum of thin sizes exceeds it
    rec "$dir" lvcreate-overcommit lvcreate -q -y -n "$v1" -V 1073741824b -T pve/data
    rec "$dir" lvs-vg-final "${lvs[@]}" pve
    if [ -d "$repo/.venv" ]; then
        echo "  pytest test_real_lvmthin_scenario:" >&2
        run lvremove -q -y "pve/$v1" >/dev/null
        (cd "$repo" && PVESAN_REAL_LVMTHIN=pve/data "${PY[@]}" -m pytest -q -p no:cacheprovider \
            service/tests/test_backends_lvmthin.py -k real 2>&1 | tail -5) >&2 || true
    fi
    run vgremove -q -y -f pve
    run pvremove -q -y "$(D 11)"
    wipe_disks
}

section_iscsi() {
    local here
    here=$(dirname "$0")
    if [ -f "$here/record-iscsi.sh" ]; then
        # shellcheck source=/dev/null
        . "$here/record-iscsi.sh"
        record_iscsi
    else
        echo "== iscsi: record-iscsi.sh not next to $0, skipped" >&2
    fi
}

section_iscsi_chap() {
    local here
    here=$(dirname "$0")
    # shellcheck source=/dev/null
    . "$here/record-iscsi.sh"
    record_iscsi_chap
}

for s in "${sections[@]}"; do
    "section_$s"
done
echo "recordings done" >&2
