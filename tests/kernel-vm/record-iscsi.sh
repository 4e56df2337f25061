# shellcheck shell=bash
# Sourced by tests/kernel-vm/record.sh inside the kernel VM: the kernel iSCSI initiator and
# dm-multipath, as pve_volume (state=attached/detached) and the Proxmox plugin (multipath 1)
# drive them. The target is a tgtd on the host (scripts/kernel-vm.sh starts it), reached at
# 10.0.2.2:<port> for each of two portals.

record_iscsi() {
    local dir=$ISCSI_DIR iqn=${KVM_ISCSI_IQN:?} ports=${KVM_ISCSI_PORTS:?}
    local p1=10.0.2.2:${ports%%,*} p2=10.0.2.2:${ports##*,}
    echo "== iscsi -> $dir" >&2
    fresh "$dir"
    run systemctl start iscsid
    run iscsiadm -m node -o delete >/dev/null 2>&1
    rec "$dir" initiatorname.cat cat /etc/iscsi/initiatorname.iscsi
    rec "$dir" session-none iscsiadm -m session
    rec "$dir" node-new-1 iscsiadm -m node -T "$iqn" -p "$p1" -o new
    rec "$dir" login-1 iscsiadm -m node -T "$iqn" -p "$p1" --login
    udevadm settle
    rec "$dir" session-one iscsiadm -m session
    rec "$dir" by-path-one.ls ls -l /dev/disk/by-path
    rec "$dir" login-1-again iscsiadm -m node -T "$iqn" -p "$p1" --login
    rec "$dir" node-new-1-again iscsiadm -m node -T "$iqn" -p "$p1" -o new
    rec "$dir" node-new-2 iscsiadm -m node -T "$iqn" -p "$p2" -o new
    rec "$dir" login-2 iscsiadm -m node -T "$iqn" -p "$p2" --login
    udevadm settle
    rec "$dir" session-two iscsiadm -m session
    rec "$dir" by-path-two.ls ls -l /dev/disk/by-path
    rec "$dir" by-id-two.ls ls -l /dev/disk/by-id
    local dev
    dev=$(readlink -f "/dev/disk/by-path/ip-$p1-iscsi-$iqn-lun-1")
    rec "$dir" scsi_id /lib/udev/scsi_id --whitelisted --device="$dev"
    rec "$dir" sg_inq-vpd83 sg_inq -p 0x83 "$dev"
    rec "$dir" sg_inq-vpd80 sg_inq -p 0x80 "$dev"
    # dm-multipath with the multipath role's defaults (roles/multipath/defaults/main.yml)
    mkdir -p /etc/multipath/conf.d
    cat >/etc/multipath/conf.d/pvesan.conf <<'CONF'
defaults {
	find_multipaths on
	user_friendly_names no
	polling_interval 5
}
devices {
	device {
		vendor "PVESAN"
		product ".*"
		path_grouping_policy multibus
		path_selector "service-time 0"
		path_checker tur
		hardware_handler "0"
		rr_weight uniform
		failback immediate
		no_path_retry 12
		fast_io_fail_tmo 5
		dev_loss_tmo infinity
	}
}
CONF
    run modprobe dm_multipath
    run systemctl start multipathd
    run multipath -r
    sleep 2
    udevadm settle
    rec "$dir" multipath-ll multipath -ll
    rec "$dir" mapper.ls ls -l /dev/mapper
    local wwid
    wwid=$(multipath -ll | awk 'NR==1 {print $1}')
    if [ -n "$wwid" ]; then
        rec "$dir" multipath-ll-wwid multipath -ll "$wwid"
        rec "$dir" multipath-flush multipath -f "$wwid"
    fi
    rec "$dir" logout-1 iscsiadm -m node -T "$iqn" -p "$p1" --logout
    rec "$dir" node-delete-1 iscsiadm -m node -T "$iqn" -p "$p1" -o delete
    rec "$dir" session-after-logout-1 iscsiadm -m session
    rec "$dir" logout-2 iscsiadm -m node -T "$iqn" -p "$p2" --logout
    rec "$dir" node-delete-2 iscsiadm -m node -T "$iqn" -p "$p2" -o delete
    rec "$dir" session-after iscsiadm -m session
    rec "$dir" logout-not-logged-in iscsiadm -m node -T "$iqn" -p "$p1" --logout
    rec "$dir" login-no-node iscsiadm -m node -T "$iqn" -p "$p1" --login
    run systemctl stop multipathd
    run rm -f /etc/multipath/conf.d/pvesan.conf
}

# CHAP and mutual CHAP as the Proxmox plugin sets them up on the kernel-initiator path
# (roles/pve_host/files/PVESANPlugin.pm, _set_node_chap): the names by `iscsiadm -o update`, the
# secrets written into the node record file by the plugin's own code (run here with the guest's
# perl), then real logins against the host's tgtd target with an incoming and an outgoing account
# (scripts/kernel-vm.sh iscsi_target_up): right secrets, a wrong one, a wrong mutual one.
# The plugin's _set_node_chap (-o update of the names, the record file, the -S check), by the
# plugin's own code. Called through rec.
# shellcheck disable=SC2317  # invoked indirectly (rec "$@")
set_chap() {
    # shellcheck disable=SC2154  # repo: set by record.sh, which sources this file
    perl -I"$repo/tests/perl/lib" -I"$repo/roles/pve_host/files" -e '
        require PVE::Storage; require "PVESANPlugin.pm";
        my ($iqn, $portal, $u, $p, $tu, $tp) = @ARGV;
        $PVE::Storage::Custom::PVESANPlugin::LOGGER = sub { print STDERR "$_[0]\n" };
        PVE::Storage::Custom::PVESANPlugin::_set_node_chap($iqn, $portal,
            { user => $u, password => $p, mutual => { user => $tu, password => $tp } });
        print "ok\n";' "$@"
}

record_iscsi_chap() {
    local dir=$ISCSI_CHAP_DIR iqn=${KVM_ISCSI_CHAP_IQN:?} ports=${KVM_ISCSI_PORTS:?}
    local p1=10.0.2.2:${ports%%,*}
    local user=${KVM_ISCSI_CHAP_USER:?} pw=${KVM_ISCSI_CHAP_PASSWORD:?}
    local tuser=${KVM_ISCSI_CHAP_TARGET_USER:?} tpw=${KVM_ISCSI_CHAP_TARGET_PASSWORD:?}
    echo "== iscsi_chap -> $dir" >&2
    fresh "$dir"
    run systemctl start iscsid
    run iscsiadm -m node -o delete >/dev/null 2>&1
    rec "$dir" node-new iscsiadm -m node -T "$iqn" -p "$p1" -o new
    rec "$dir" set-chap set_chap "$iqn" "$p1" "$user" "$pw" "$tuser" "$tpw"
    rec "$dir" record.ls ls -l "/etc/iscsi/nodes/$iqn"
    rec "$dir" node-show-secrets iscsiadm -m node -T "$iqn" -p "$p1" -S
    rec "$dir" node-show iscsiadm -m node -T "$iqn" -p "$p1"
    rec "$dir" login iscsiadm -m node -T "$iqn" -p "$p1" --login
    udevadm settle
    rec "$dir" session iscsiadm -m session
    rec "$dir" session-P3 iscsiadm -m session -P 3
    rec "$dir" by-path.ls ls -l /dev/disk/by-path
    rec "$dir" rescan iscsiadm -m node -T "$iqn" -p "$p1" -R
    rec "$dir" logout iscsiadm -m node -T "$iqn" -p "$p1" --logout
    rec "$dir" set-chap-wrong-password set_chap "$iqn" "$p1" "$user" "not-the-secret-000" "$tuser" "$tpw"
    rec "$dir" login-wrong-password iscsiadm -m node -T "$iqn" -p "$p1" --login
    rec "$dir" set-chap-wrong-mutual set_chap "$iqn" "$p1" "$user" "$pw" "$tuser" "not-the-target-000"
    rec "$dir" login-wrong-mutual iscsiadm -m node -T "$iqn" -p "$p1" --login
    rec "$dir" session-after iscsiadm -m session
    rec "$dir" node-delete iscsiadm -m node -T "$iqn" -p "$p1" -o delete
    rec "$dir" record-after.ls ls "/etc/iscsi/nodes"
}
