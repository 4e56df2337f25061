package PVE::Storage::Plugin;

# Test double of pve-storage's PVE::Storage::Plugin (src/PVE/Storage/Plugin.pm): the parts a
# custom plugin relies on, with the same names, argument orders and behaviour:
#   @SHARED_STORAGE and parse_config's use of it (storage.cfg `shared` without `shared 1`),
#   find_free_diskname/get_next_vm_diskname (name allocation through list_images),
#   default hooks and volume methods that die like the real file-based defaults,
#   the raw+size stream header helpers (write_common_header/read_common_header).
# No SectionConfig: tests hand the plugin a parsed $scfg hash directly.

use strict;
use warnings;

our @SHARED_STORAGE = qw(iscsi nfs cifs rbd cephfs iscsidirect zfs drbd pbs);    # pve-storage 9.1.7
our $MAX_VOLUMES_PER_GUEST = 1024;

# PVE::Storage::Plugin::parse_config: every type listed in @SHARED_STORAGE is marked shared.
sub apply_shared_flag {
    my ($ids) = @_;
    for my $d (values %$ids) {
        $d->{shared} = 1 if grep { $_ eq $d->{type} } @SHARED_STORAGE;
    }
    return $ids;
}

sub on_add_hook { return undef; }
sub on_update_hook { return undef; }
sub on_delete_hook { return undef; }

sub get_next_vm_diskname {
    my ($disk_list, $storeid, $vmid, $fmt, $scfg, $add_fmt_suffix) = @_;
    $fmt //= '';
    my $prefix = ($fmt eq 'subvol') ? 'subvol' : 'vm';
    my $suffix = $add_fmt_suffix ? ".$fmt" : '';
    my %ids;
    for my $disk (@$disk_list) {
        $ids{$2} = 1 if $disk =~ m/(vm|base)-$vmid-disk-(\d+)$suffix/;
    }
    for (my $i = 0; $i < $MAX_VOLUMES_PER_GUEST; $i++) {
        return "$prefix-$vmid-disk-$i$suffix" if !$ids{$i};
    }
    die "unable to allocate an image name for VM $vmid in storage '$storeid'\n";
}

sub find_free_diskname {
    my ($class, $storeid, $scfg, $vmid, $fmt, $add_fmt_suffix) = @_;
    my $disks = $class->list_images($storeid, $scfg, $vmid);
    my $disk_list = [map { $_->{volid} } @$disks];
    return get_next_vm_diskname($disk_list, $storeid, $vmid, $fmt, $scfg, $add_fmt_suffix);
}

sub volume_snapshot_needs_fsfreeze { return 0; }
sub volume_rollback_is_possible { return 1; }
sub map_volume {
    my ($class, $storeid, $scfg, $volname, $snapname) = @_;
    my ($path) = $class->path($scfg, $volname, $storeid, $snapname);
    return $path;
}
sub unmap_volume { return 1; }
sub check_connection { return 1; }

# raw+size stream header of export/import (8-byte little-endian size in bytes), as pve-storage.
sub write_common_header($$) {
    my ($fh, $image_size_in_bytes) = @_;
    syswrite($fh, pack("Q<", $image_size_in_bytes), 8);
}

sub read_common_header($) {
    my ($fh) = @_;
    sysread($fh, my $size, 8);
    $size = unpack('Q<', $size);
    die "import: no size found in export header, aborting.\n" if !defined($size);
    return $size;
}

1;
