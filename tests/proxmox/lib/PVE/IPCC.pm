package PVE::IPCC;

# Stand-in for pve-cluster's PVE::IPCC (an XS module that talks to pmxcfs over libqb IPC).
# pmxcfs cannot run here, so the dev-time check (scripts/proxmox-check.sh) runs the REAL
# PVE::Cluster on top of this: /etc/pve is a plain directory (inside a private mount
# namespace), and the few requests PVE::Storage makes are answered from it the way pmxcfs
# answers them (pve-cluster src/pmxcfs/server.c):
#   GET_FS_VERSION   {"starttime": ...} without per-file versions, so every cfs_read_file
#                    re-reads and re-parses the file (pmxcfs's versions only avoid re-parsing)
#   GET_CONFIG       the file's content under /etc/pve; undef with $! = ENOENT when missing
#   GET_CLUSTER_INFO a one-node cluster without corosync
#   GET_GUEST_LIST   the guests whose config is under /etc/pve/nodes/<node>/qemu-server
#   SET_STATUS, LOG_CLUSTER_MSG  accepted and dropped (kv status, cluster log)
#   GET_STATUS       nothing stored
# Anything else dies, so a code path that needs more of pmxcfs shows up at once.

use strict;
use warnings;

use POSIX qw(ENOENT);
use JSON::PP;

our $BASEDIR = '/etc/pve';
my $STARTTIME = time();

sub _nodename {
    my $name = (POSIX::uname())[1];
    $name =~ s/\..*$//;
    return $name;
}

sub ipcc_send_rec {
    my ($msgid, $data) = @_;
    $! = 0;
    if ($msgid == 1) {    # CFS_IPC_GET_FS_VERSION
        return encode_json({ starttime => $STARTTIME, clinfo => 1, vmlist => 1 });
    }
    if ($msgid == 2) {    # CFS_IPC_GET_CLUSTER_INFO
        my $node = _nodename();
        return encode_json({ version => 1, nodelist => { $node => { id => 1, online => 1, ip => '127.0.0.1' } } });
    }
    if ($msgid == 3) {    # CFS_IPC_GET_GUEST_LIST
        my $node = _nodename();
        my $ids = {};
        for my $conf (glob("$BASEDIR/nodes/$node/qemu-server/*.conf")) {
            my ($vmid) = $conf =~ m!/(\d+)\.conf$! or next;
            $ids->{$vmid} = { node => $node, type => 'qemu', version => 1 };
        }
        return encode_json({ version => 1, ids => $ids });
    }
    if ($msgid == 4 || $msgid == 7) {    # CFS_IPC_SET_STATUS, CFS_IPC_LOG_CLUSTER_MSG
        return undef;
    }
    if ($msgid == 5) {    # CFS_IPC_GET_STATUS
        return undef;
    }
    if ($msgid == 6) {    # CFS_IPC_GET_CONFIG
        my ($path) = unpack('Z*', $data);
        die "PVE::IPCC stand-in: bad path '$path'\n" if $path =~ m!(^|/)\.\.(/|$)!;
        open(my $fh, '<', "$BASEDIR/$path") or do { $! = ENOENT; return undef; };
        local $/;
        my $content = <$fh>;
        close($fh);
        $! = 0;
        return length($content) ? $content : undef;
    }
    die "PVE::IPCC stand-in: request $msgid is not implemented (see tests/proxmox/lib/PVE/IPCC.pm)\n";
}

sub sendfd {
    die "PVE::IPCC stand-in: sendfd is not implemented\n";
}

1;
