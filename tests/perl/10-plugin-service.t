# Every storage method of the plugin, called as pve-storage calls it (argument orders of
# PVE/Storage/Plugin.pm), through the real `pvesan` CLI against a real pvesan-service with a
# real tgtd (started and removed by PVESANTest::Service). Data checks go through iSCSI with
# QEMU's libiscsi client (qemu-io), as Proxmox's QEMU would.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../../roles/pve_host/files";
use File::Temp qw(tempdir);
use Test::More;

use PVESANTest::Service qw(start_service);

my $svc = start_service();
END { $svc->stop() if $svc; }

use PVE::Storage;
require PVESANPlugin;
my $P = 'PVE::Storage::Custom::PVESANPlugin';
my $MiB = 1024 * 1024;

my @log;
my $priv = tempdir(CLEANUP => 1);
no warnings 'once';
$PVE::Storage::Custom::PVESANPlugin::PVESAN_CLI = $svc->{cli};
$PVE::Storage::Custom::PVESANPlugin::PRIV_DIR = "$priv/storage";
$PVE::Storage::Custom::PVESANPlugin::LOGGER = sub { push @log, @_ };
$ENV{PVESAN_CA} = $svc->{ca};    # on a node, pve_host puts the service certificate in the system CA store

my $sid = 'san';
my $scfg = { type => 'pvesan', api_url => $svc->{api_url}, ssl_verify_peer => 1, content => { images => 1 }, shared => 1 };

# storage added: the token goes to priv/storage/<id>.pw
$P->on_add_hook($sid, $scfg, auth_token => $svc->{token});

# --- storage
ok($P->activate_storage($sid, $scfg, {}), 'activate_storage');
my ($total, $avail, $used, $active) = $P->status($sid, $scfg, {});
ok($total > 900 * $MiB && $total < 1024 * $MiB, "status: real total of the 1 GiB XFS pool ($total)");
ok($avail > 0 && $avail <= $total, "status: available $avail");
is($active, 1, 'status: active');

# --- allocate: next free name, given name, errors
my $v0 = $P->alloc_image($sid, $scfg, 100, 'raw', undef, 64 * 1024);    # KiB
is($v0, 'vm-100-disk-0', 'alloc_image picks vm-100-disk-0');
is($P->alloc_image($sid, $scfg, 100, 'raw', undef, 32 * 1024), 'vm-100-disk-1', 'then vm-100-disk-1');
is($P->alloc_image($sid, $scfg, 100, 'raw', 'vm-100-disk-5', 16 * 1024), 'vm-100-disk-5', 'a given name');
eval { $P->alloc_image($sid, $scfg, 100, 'raw', 'vm-100-disk-5', 16 * 1024) };
like($@, qr/already exists/, 'a taken name is refused');
eval { $P->alloc_image($sid, $scfg, 100, 'raw', 'vm-200-disk-0', 16 * 1024) };
like($@, qr/belongs to VM 200/, 'a name of another VM is refused');
eval { $P->alloc_image($sid, $scfg, 100, 'qcow2', undef, 16 * 1024) };
like($@, qr/unsupported format 'qcow2'/, 'qcow2 is refused');

# --- list
my $list = $P->list_images($sid, $scfg, 100);
is_deeply([sort map { $_->{volid} } @$list], ["$sid:vm-100-disk-0", "$sid:vm-100-disk-1", "$sid:vm-100-disk-5"],
    'list_images of VM 100');
my ($l0) = grep { $_->{volid} eq "$sid:vm-100-disk-0" } @$list;
is($l0->{size}, 64 * $MiB, 'size in bytes');
is($l0->{format}, 'raw', 'format');
is($l0->{vmid}, 100, 'vmid');
is(scalar(@{ $P->list_images($sid, $scfg, 999) }), 0, 'no volumes of VM 999');
is(scalar(@{ $P->list_images($sid, $scfg, undef, ["$sid:vm-100-disk-1"]) }), 1, 'vollist filter');

# --- path: libiscsi URL of a live export
my ($path, $vmid, $vtype) = $P->path($scfg, $v0, $sid);
like($path, qr{^iscsi://\Q$svc->{portal}\E/iqn\.[^/]+/1$}, "path is an iscsi:// URL ($path)");
is($vmid, 100, 'path vmid');
is($vtype, 'images', 'path vtype');
my ($iqn) = $path =~ m{/(iqn[^/]+)/1$};
ok((grep { $_ eq $iqn } @{ $svc->targets() }), 'tgtd exports it');
ok($P->activate_volume($sid, $scfg, $v0, undef, {}), 'activate_volume');
ok($P->deactivate_volume($sid, $scfg, $v0, undef, {}), 'deactivate_volume');
my $bd = $P->qemu_blockdev_options($scfg, $sid, $v0, undef, {});
is_deeply($bd, { driver => 'iscsi', transport => 'tcp', portal => $svc->{portal}, target => $iqn, lun => 1 },
    'qemu_blockdev_options (PVE 9 -blockdev) describes the libiscsi export');
eval { $P->path($scfg, $v0, $sid, 'snap1') };
like($@, qr/not accessible/, 'snapshots have no path');

my $has_qemu_io = !system('sh', '-c', 'command -v qemu-io >/dev/null');
sub qio {
    my ($cmd, $url) = @_;
    my $out = qx(qemu-io -f raw -c '$cmd' '$url' 2>&1);
    return $? == 0 && $out !~ /Pattern verification failed|failed/i;
}

# --- size and resize (grow only)
is(scalar($P->volume_size_info($scfg, $sid, $v0)), 64 * $MiB, 'volume_size_info scalar');
my @info = $P->volume_size_info($scfg, $sid, $v0);
is($info[1], 'raw', 'volume_size_info format');
$P->volume_resize($scfg, $sid, $v0, 128 * $MiB, 0);
is(scalar($P->volume_size_info($scfg, $sid, $v0)), 128 * $MiB, 'grown to 128 MiB');
SKIP: {
    skip 'iscsi-readcapacity16 missing', 1 if system('sh', '-c', 'command -v iscsi-readcapacity16 >/dev/null');
    my $cap = qx(iscsi-readcapacity16 -s '$path' 2>&1);
    like($cap, qr/^134217728$/m, 'the initiator sees 128 MiB') or diag $cap;
}
eval { $P->volume_resize($scfg, $sid, $v0, 64 * $MiB, 0) };
ok($@, 'shrinking is refused') and note $@;

# --- snapshot, overwrite, rollback: verified by content through iSCSI
SKIP: {
    skip 'qemu-io missing', 4 if !$has_qemu_io;
    ok(qio('write -P 0xa5 0 1M', $path), 'write pattern a5');
    $P->volume_snapshot($scfg, $sid, $v0, 'snap1');
    ok(qio('write -P 0x5a 0 1M', $path), 'overwrite with 5a');
    ok($P->volume_rollback_is_possible($scfg, $sid, $v0, 'snap1', []), 'rollback is possible');
    $P->volume_snapshot_rollback($scfg, $sid, $v0, 'snap1');
    ok(qio('read -P 0xa5 0 1M', $path), 'after rollback the old pattern is back');
}
$P->volume_snapshot($scfg, $sid, $v0, 'snap2') if !$has_qemu_io;
eval { $P->volume_rollback_is_possible($scfg, $sid, $v0, 'nosuch', []) };
like($@, qr/does not exist/, 'rollback to a missing snapshot is refused');
$P->volume_snapshot_delete($scfg, $sid, $v0, 'snap1', 0) if $has_qemu_io;
my $snaps = $svc->admin('--tenant', 'cluster1', 'snapshot', 'list', $v0);
ok(!grep({ $_->{name} eq 'snap1' } @$snaps), 'volume_snapshot_delete removed it');

# --- template and linked clone
my $base = $P->create_base($sid, $scfg, 'vm-100-disk-1');
is($base, 'base-100-disk-1', 'create_base renames to base-');
my $clone = $P->clone_image($scfg, $sid, $base, 101);
is($clone, 'base-100-disk-1/vm-101-disk-0', 'clone_image returns the linked clone volname');
my ($c) = @{ $P->list_images($sid, $scfg, 101) };
is($c->{volid}, "$sid:base-100-disk-1/vm-101-disk-0", 'list_images shows the base of a clone');
is(scalar($P->volume_size_info($scfg, $sid, $clone)), 32 * $MiB, 'clone size');
like(scalar($P->path($scfg, $clone, $sid)), qr{^iscsi://}, 'the clone is exported');
eval { $P->clone_image($scfg, $sid, $v0, 102) };
like($@, qr/templates/, 'linked clone of a non-template is refused');

# --- rename (reassign to another VM)
is($P->rename_volume($scfg, $sid, 'vm-100-disk-5', 102, undef), "$sid:vm-102-disk-0", 'rename_volume to VM 102');
is_deeply([map { $_->{volid} } @{ $P->list_images($sid, $scfg, 102) }], ["$sid:vm-102-disk-0"], 'now owned by VM 102');

# --- free: volumes and their exports gone
$P->free_image($sid, $scfg, $clone, 0);
$P->free_image($sid, $scfg, $base, 1);
$P->free_image($sid, $scfg, 'vm-102-disk-0', 0);
$P->free_image($sid, $scfg, $v0, 0);
is(scalar(@{ $P->list_images($sid, $scfg, undef) }), 0, 'every volume freed');
ok(!grep({ $_ eq $iqn } @{ $svc->targets() }), 'the export is gone from tgtd');
eval { $P->free_image($sid, $scfg, 'vm-100-disk-9', 0) };
like($@, qr/not found/, 'freeing a missing volume says so');

# --- failures say what is wrong
eval { $P->status($sid, { %$scfg, api_url => 'https://127.0.0.1:1' }, {}) };
like($@, qr/cannot reach/, 'storage down: status fails with the reason');
{
    local $ENV{PVESAN_CA} = '/etc/ssl/certs/ca-certificates.crt';
    eval { $P->status($sid, $scfg, {}) };
    like($@, qr/certificate|cannot reach/i, 'an untrusted certificate is refused with ssl_verify_peer 1');
    ok(scalar($P->status($sid, { %$scfg, ssl_verify_peer => 0 }, {})), 'ssl_verify_peer 0 skips verification');
}
$P->on_delete_hook($sid, $scfg);
eval { $P->status($sid, $scfg, {}) };
like($@, qr/pvesm set san --auth_token/, 'no token: the error says how to set it');

# --- syslog: every call tagged, arguments shown, the token never
for my $m (qw(alloc_image free_image list_images status path volume_resize volume_snapshot
    volume_snapshot_rollback volume_snapshot_delete create_base clone_image rename_volume)) {
    ok(scalar(grep { /^pvesan: \Q$m\E\(/ } @log), "$m is logged");
}
ok(scalar(grep { /^pvesan: alloc_image\(san, 100, raw, undef, 65536\)$/ } @log), 'with its arguments');
ok(!grep({ index($_, $svc->{token}) >= 0 } @log), 'the token never appears in the log');

done_testing();
