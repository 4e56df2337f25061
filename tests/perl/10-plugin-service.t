# Every storage method of the plugin, called as pve-storage calls it (argument orders of
# PVE/Storage/Plugin.pm), through the real `pvesan` CLI against a real pvesan-service with a
# real tgtd (started and removed by PVESANTest::Service). Data checks go through iSCSI with
# QEMU's libiscsi client (qemu-io) opened with exactly the -blockdev options the plugin gives
# Proxmox VE 9; what Proxmox lets through is the recorded $allowed_qemu_blockdev_options of
# pve-storage 9.1.7 (tests/unit/plugins/module_utils/fixtures/proxmox/pve-9.1.json).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../../roles/pve_host/files";
use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;

use PVESANTest::Service qw(start_service);

my $svc = start_service();
END { $svc->stop() if $svc; }

use PVE::Storage;
require PVESANPlugin;
my $P = 'PVE::Storage::Custom::PVESANPlugin';
my $MiB = 1024 * 1024;

my $facts = do {
    my $f = "$FindBin::Bin/../unit/plugins/module_utils/fixtures/proxmox/pve-9.1.json";
    open(my $fh, '<', $f) or die "$f: $!";
    local $/;
    decode_json(<$fh>);
};
my $ALLOWED = $facts->{blockdev}->{allowed};

# What PVE::Storage::qemu_blockdev_options lets through (it drops anything else with a warning).
sub passes_pve_filter {
    my ($bd) = @_;
    my $allowed = $ALLOWED->{ $bd->{driver} } or return 0;
    return !grep { $_ ne 'driver' && !$allowed->{$_} } keys %$bd;
}

my @log;
my $tmp = tempdir(CLEANUP => 1);
mkdir("$tmp/priv") or die;
no warnings 'once';
$PVE::Storage::Custom::PVESANPlugin::PVESAN_CLI = $svc->{cli};
$PVE::Storage::Custom::PVESANPlugin::PRIV_DIR = "$tmp/priv/storage";
$PVE::Storage::Custom::PVESANPlugin::STATUS_CACHE_DIR = "$tmp/run";
$PVE::Storage::Custom::PVESANPlugin::LOGGER = sub { push @log, @_ };
$ENV{PVESAN_CA} = $svc->{ca};    # on a node, pve_host puts the service certificate in the system CA store

# The node's initiator name, as /etc/iscsi/initiatorname.iscsi has it.
my $NODE_IQN = 'iqn.1993-08.org.debian:01:pvesan-test-node';
open(my $ifh, '>', "$tmp/initiatorname.iscsi") or die;
print $ifh "## DO NOT EDIT OR REMOVE THIS FILE!\nInitiatorName=$NODE_IQN\n";
close($ifh);
$PVE::Storage::Custom::PVESANPlugin::INITIATOR_NAME_FILE = "$tmp/initiatorname.iscsi";

my $sid = 'san';
my $scfg = { type => 'pvesan', api_url => $svc->{api_url}, ssl_verify_peer => 1, content => { images => 1 }, shared => 1 };
$PVE::Storage::TEST_CONFIG = { ids => { $sid => { %$scfg }, local => { type => 'dir', path => '/var/lib/vz' } } };

# storage added: the token goes to priv/storage/<id>.pw
$P->on_add_hook($sid, $scfg, auth_token => $svc->{token});

# A section that dies (a method missing or failing) fails as one test and the file goes on.
sub section {
    my ($name, $code) = @_;
    eval { $code->(); 1 } or fail("$name: died: $@");
}

my $seen = 0;
sub cli_runs {    # the CLI commands run since the last look (from the syslog lines)
    my ($re) = @_;
    my @runs = grep { /^pvesan: exec\(\S*pvesan --json / } @log[$seen .. $#log];
    $seen = @log;
    return grep { !$re || /$re/ } @runs;
}

# --- storage: one status call serves activate_storage and status (finding 9)
cli_runs();
ok($P->activate_storage($sid, $scfg, {}), 'activate_storage');
my ($total, $avail, $used, $active) = $P->status($sid, $scfg, {});
ok($total > 900 * $MiB && $total < 1024 * $MiB, "status: real total of the 1 GiB XFS pool ($total)");
ok($avail > 0 && $avail <= $total, "status: available $avail");
is($active, 1, 'status: active');
is(scalar(cli_runs(qr/ status/)), 1, 'activate_storage + status: one `pvesan status`');

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

# --- path and -blockdev of a volume without CHAP: QEMU's libiscsi
my ($path, $vmid, $vtype) = $P->path($scfg, $v0, $sid);
like($path, qr{^iscsi://\Q$svc->{portal}\E/iqn\.[^/]+/1$}, "path is an iscsi:// URL ($path)");
is($vmid, 100, 'path vmid');
is($vtype, 'images', 'path vtype');
my ($iqn) = $path =~ m{/(iqn[^/]+)/1$};
ok((grep { $_ eq $iqn } @{ $svc->targets() }), 'tgtd exports it');
ok($P->activate_volume($sid, $scfg, $v0, undef, {}), 'activate_volume');
ok($P->deactivate_volume($sid, $scfg, $v0, undef, {}), 'deactivate_volume');
my $bd = $P->qemu_blockdev_options($scfg, $sid, $v0, undef, {});
is_deeply($bd, { driver => 'iscsi', transport => 'tcp', portal => $svc->{portal}, target => $iqn, lun => 1,
    'initiator-name' => $NODE_IQN }, 'qemu_blockdev_options: the libiscsi export, with the node\'s initiator name');
ok(passes_pve_filter($bd), 'every option passes PVE 9.1\'s $allowed_qemu_blockdev_options');
eval { $P->path($scfg, $v0, $sid, 'snap1') };
like($@, qr/not accessible/, 'snapshots have no path');

# the data path QEMU really opens: the -blockdev options as qemu-io --image-opts
sub image_opts {
    my ($blockdev) = @_;
    return join(',', 'driver=raw', map { "file.$_=$blockdev->{$_}" } sort keys %$blockdev);
}
sub qio {
    my ($cmd, $blockdev) = @_;
    my $opts = image_opts($blockdev);
    my $out = qx(qemu-io --image-opts -c '$cmd' '$opts' 2>&1);
    return $? == 0 && $out !~ /Pattern verification failed|failed|error/i;
}

# --- initiator ACLs: the tenant's ACL lists the nodes' initiator names; QEMU's -blockdev iscsi
# driver presents initiator-name only when the options carry it (-iscsi initiator-name=..., which
# qemu-server adds, applies to iscsi:// filenames, not to -blockdev)
ok($svc->admin('--tenant', 'cluster1', 'volume', 'update', $v0, '--initiator', $NODE_IQN), 'ACL: only this node');
ok(qio('read 0 4k', $bd), 'with the plugin\'s options the node logs in');
my %anonymous = %$bd;
delete $anonymous{'initiator-name'};
ok(!qio('read 0 4k', \%anonymous), 'without initiator-name QEMU presents iqn.2008-11.org.linux-kvm and is refused');
ok($svc->admin('--tenant', 'cluster1', 'volume', 'update', $v0, '--tenant-initiators'), 'ACL back to the tenant\'s');

# --- size and resize (grow only); ctime in epoch seconds, used = allocated bytes (finding 7)
is(scalar($P->volume_size_info($scfg, $sid, $v0)), 64 * $MiB, 'volume_size_info scalar');
my @info = $P->volume_size_info($scfg, $sid, $v0);
is($info[1], 'raw', 'volume_size_info format');
like($info[4] // '', qr/^\d+$/, "volume_size_info ctime is epoch seconds ($info[4])");
ok(abs(($info[4] // 0) - time()) < 600, 'and about now');
$P->volume_resize($scfg, $sid, $v0, 128 * $MiB, 0);
is(scalar($P->volume_size_info($scfg, $sid, $v0)), 128 * $MiB, 'grown to 128 MiB');
SKIP: {
    skip 'iscsi-readcapacity16 missing', 1 if system('sh', '-c', 'command -v iscsi-readcapacity16 >/dev/null');
    my $cap = qx(iscsi-readcapacity16 -i $NODE_IQN -s '$path' 2>&1);
    like($cap, qr/^134217728$/m, 'the initiator sees 128 MiB') or diag $cap;
}
eval { $P->volume_resize($scfg, $sid, $v0, 64 * $MiB, 0) };
ok($@, 'shrinking is refused') and note $@;

# --- snapshot, overwrite, rollback: verified by content through iSCSI
ok(qio('write -P 0xa5 0 1M', $bd), 'write pattern a5');
$P->volume_snapshot($scfg, $sid, $v0, 'snap1');
ok(qio('write -P 0x5a 0 1M', $bd), 'overwrite with 5a');
ok($P->volume_rollback_is_possible($scfg, $sid, $v0, 'snap1', []), 'rollback is possible');
$P->volume_snapshot_rollback($scfg, $sid, $v0, 'snap1');
ok(qio('read -P 0xa5 0 1M', $bd), 'after rollback the old pattern is back');
eval { $P->volume_rollback_is_possible($scfg, $sid, $v0, 'nosuch', []) };
like($@, qr/does not exist/, 'rollback to a missing snapshot is refused');
my @sized = $P->volume_size_info($scfg, $sid, $v0);
my $vol0 = $svc->admin('--tenant', 'cluster1', 'volume', 'show', $v0);
if (defined($vol0->{allocated})) {
    ok($sized[2] < $sized[0], "used is the volume's allocated bytes ($sized[2] of $sized[0])");
    is($sized[2], $vol0->{allocated}, 'as the service reports them');
} else {
    is($sized[2], $sized[0], 'the service reports no allocated bytes: used is the size');
}

# --- API 15: a snapshot is no resize target (finding 4); snapshot info; snapshots are not
# attached (finding 6)
eval { $P->volume_resize($scfg, $sid, $v0, 256 * $MiB, 0, 'snap1') };
like($@, qr/cannot resize snapshot 'snap1'/, 'volume_resize with $snapname dies');
is(scalar($P->volume_size_info($scfg, $sid, $v0)), 128 * $MiB, 'and the volume keeps its size');
section('volume_snapshot_info', sub {
    my $sinfo = $P->volume_snapshot_info($scfg, $sid, $v0);
    is_deeply([sort keys %$sinfo], ['snap1'], 'volume_snapshot_info: the snapshots by name');
    like($sinfo->{snap1}->{id} // '', qr/\S/, 'with the service\'s snapshot id');
    ok(abs(($sinfo->{snap1}->{timestamp} // 0) - time()) < 600, 'and its creation time in epoch seconds');
    is_deeply($P->volume_snapshot_info($scfg, $sid, 'vm-100-disk-9'), {}, 'a volume that does not exist: {}');
});
my $snap_bd = eval { $P->qemu_blockdev_options($scfg, $sid, $v0, undef, { 'snapshot-name' => 'snap1' }) };
like($@, qr/snapshot 'snap1' of '\Q$v0\E' cannot be attached/, 'qemu_blockdev_options of a snapshot dies');
is_deeply($P->qemu_blockdev_options($scfg, $sid, $v0, undef, { 'snapshot-name' => 'current' }), $bd,
    "snapshot-name 'current' is the volume");

# --- filesystem_path without $scfg->{storage} (the parser never sets it; finding 5)
section('filesystem_path', sub {
    is(scalar($P->filesystem_path({ %$scfg }, $v0)), $path, 'filesystem_path finds its storage in storage.cfg');
    local $PVE::Storage::TEST_CONFIG = { ids => { a => { %$scfg }, b => { %$scfg } } };
    eval { $P->filesystem_path({ %$scfg }, $v0) };
    like($@, qr/cannot tell which storage this is \(a b/, 'two storages with the same settings: it says so');
});

# --- export and import, raw+size (storage_migrate, disk move; finding 8)
section('export and import', sub {
    is_deeply([$P->volume_export_formats($scfg, $sid, $v0, undef, undef, 0)], ['raw+size'], 'export formats: raw+size');
    is_deeply([$P->volume_export_formats($scfg, $sid, $v0, 'snap1', undef, 0)], [], 'none of a snapshot');
    is_deeply([$P->volume_import_formats($scfg, $sid, 'vm-103-disk-0', undef, undef, 0)], ['raw+size'], 'import formats: raw+size');
    is_deeply([$P->volume_import_formats($scfg, $sid, 'vm-103-disk-0', undef, undef, 1)], [], 'none with snapshots');
    open(my $out, '>', "$tmp/export.raw+size") or die;
    $P->volume_export($scfg, $sid, $out, $v0, 'raw+size', undef, undef, 0);
    close($out);
    open(my $in, '<', "$tmp/export.raw+size") or die;
    sysread($in, my $hdr, 8);
    is(unpack('Q<', $hdr), 128 * $MiB, 'the stream starts with the size');
    sysread($in, my $first, 1024 * 1024);
    is($first, "\xa5" x (1024 * 1024), 'then the volume\'s data');
    close($in);
    is(-s "$tmp/export.raw+size", 8 + 128 * $MiB, 'all of it');
    open($in, '<', "$tmp/export.raw+size") or die;
    is($P->volume_import($scfg, $sid, $in, 'vm-103-disk-0', 'raw+size', undef, undef, 0, 0), "$sid:vm-103-disk-0",
        'volume_import creates the volume');
    close($in);
    is(scalar($P->volume_size_info($scfg, $sid, 'vm-103-disk-0')), 128 * $MiB, 'of the same size');
    my $bd3 = $P->qemu_blockdev_options($scfg, $sid, 'vm-103-disk-0', undef, {});
    ok(qio('read -P 0xa5 0 1M', $bd3) && qio('read -P 0 1M 127M', $bd3), 'with the same data, read through iSCSI');
    open($in, '<', "$tmp/export.raw+size") or die;
    eval { $P->volume_import($scfg, $sid, $in, 'vm-103-disk-0', 'raw+size', undef, undef, 0, 0) };
    like($@, qr/already exists/, 'an existing name is refused without allow-rename');
    is($P->volume_import($scfg, $sid, $in, 'vm-103-disk-0', 'raw+size', undef, undef, 0, 1), "$sid:vm-103-disk-1",
        'with allow-rename it gets the next free name');
    close($in);
    open($in, '<', '/dev/null') or die;
    eval { $P->volume_import($scfg, $sid, $in, 'vm-104-disk-0', 'raw+size', undef, undef, 0, 0) };
    ok($@, 'an empty stream is refused') and note $@;
    ok(!grep({ $_->{name} eq 'vm-104-disk-0' } @{ $svc->admin('--tenant', 'cluster1', 'volume', 'list') }),
        'and leaves no volume behind');
    eval { $P->volume_export($scfg, $sid, \*STDOUT, $v0, 'qcow2+size', undef, undef, 1) };
    like($@, qr/format 'qcow2\+size' is not available/, 'other formats are refused');
    $P->free_image($sid, $scfg, $_, 0) for qw(vm-103-disk-0 vm-103-disk-1);
});

$P->volume_snapshot_delete($scfg, $sid, $v0, 'snap1', 0);
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

# --- CHAP (the tenant default since the tenant-isolation work): never through QEMU's libiscsi,
# whose -blockdev driver PVE 9 gives no user/password-secret; the kernel initiator takes it
# (tests/perl/20-plugin-kernel-initiator.t logs in). No secret in a path, an option or a log line.
my ($chap_pw, $mutual_pw, $chap_token) = ('', '', '');
section('CHAP', sub {
    $chap_pw = 'chap-secret-' . join('', map { ('a' .. 'z')[rand 26] } 1 .. 16);
    $mutual_pw = 'mutual-secret-' . join('', map { ('a' .. 'z')[rand 26] } 1 .. 16);
    $chap_token = $svc->tenant_token('chapten', '--initiator', $NODE_IQN, '--chap-user', 'chapten-user',
        '--chap-password', $chap_pw, '--mutual-user', 'target-user', '--mutual-password', $mutual_pw);
    $P->on_add_hook('sanchap', $scfg, auth_token => $chap_token);
    my $cv = $P->alloc_image('sanchap', $scfg, 200, 'raw', undef, 16 * 1024);
    my $cpath = $P->path($scfg, $cv, 'sanchap');
    like($cpath, qr{^/dev/disk/by-path/ip-\Q$svc->{portal}\E-iscsi-iqn\.\S+-lun-1$},
        "a CHAP volume's path is the kernel initiator's device ($cpath)");
    my $cbd = $P->qemu_blockdev_options($scfg, 'sanchap', $cv, undef, {});
    is_deeply($cbd, { driver => 'host_device', filename => $cpath }, 'its -blockdev is a host_device');
    ok(passes_pve_filter($cbd), 'which passes PVE 9.1\'s filter');
    ok(!grep({ index($_, $chap_pw) >= 0 || index($_, $mutual_pw) >= 0 } $cpath, encode_json($cbd), @log),
        'no CHAP secret in the path, the options or any log line');
    $P->free_image('sanchap', $scfg, $cv, 0);
});

# --- free: volumes and their exports gone
$P->free_image($sid, $scfg, $clone, 0);
$P->free_image($sid, $scfg, $base, 1);
$P->free_image($sid, $scfg, 'vm-102-disk-0', 0);
$P->free_image($sid, $scfg, $v0, 0);
is(scalar(@{ $P->list_images($sid, $scfg, undef) }), 0, 'every volume freed');
ok(!grep({ $_ eq $iqn } @{ $svc->targets() }), 'the export is gone from tgtd');
eval { $P->free_image($sid, $scfg, 'vm-100-disk-9', 0) };
like($@, qr/not found/, 'freeing a missing volume says so');

# --- the status cache (finding 9): one `pvesan status` per storage and node while fresh, for
# every process; a changed setting or token is a miss; failures are remembered too
section('status cache', sub {
    local $PVE::Storage::Custom::PVESANPlugin::STATUS_TTL = 60;    # long enough for a loaded machine
    cli_runs();
    %PVE::Storage::Custom::PVESANPlugin::STATUS_MEMO = ();
    unlink("$tmp/run/status-$sid.json");
    my $vx = $P->alloc_image($sid, $scfg, 300, 'raw', undef, 1024);
    for (1 .. 5) {
        $P->activate_storage($sid, $scfg, {});
        $P->status($sid, $scfg, {});
        $P->list_images($sid, $scfg, 300);
        $P->path($scfg, $vx, $sid);
    }
    is(scalar(cli_runs(qr/ status/)), 1, 'a session of 20 calls runs `pvesan status` once');
    %PVE::Storage::Custom::PVESANPlugin::STATUS_MEMO = ();    # another process on the node
    $P->status($sid, $scfg, {});
    is(scalar(cli_runs(qr/ status/)), 0, 'another process reads the node\'s cache');
    is((stat("$tmp/run/status-$sid.json"))[2] & 07777, 0600, 'which is 0600');
    $P->status($sid, { %$scfg, query_include => 'ssd' }, {});
    is(scalar(cli_runs(qr/ status/)), 1, 'other placement options: asked again');
    $PVE::Storage::Custom::PVESANPlugin::STATUS_TTL = 0.5;
    sleep(0.6);
    $P->status($sid, $scfg, {});
    is(scalar(cli_runs(qr/ status/)), 1, 'after the TTL: asked again');
    $PVE::Storage::Custom::PVESANPlugin::STATUS_TTL = 60;
    my $down = { %$scfg, api_url => 'https://127.0.0.1:1' };
    eval { $P->status($sid, $down, {}) };
    like($@, qr/cannot reach/, 'storage down: status fails with the reason');
    eval { $P->activate_storage($sid, $down, {}) };
    like($@, qr/cannot reach/, 'activate_storage says the same');
    is(scalar(cli_runs(qr/ status/)), 1, 'without asking the down service twice');
    $P->free_image($sid, $scfg, $vx, 0);
});

# --- API 14: get_identity is the service's instance id
section('get_identity', sub {
    my $st = $svc->admin('status');
    if (defined($st->{instance_id})) {
        is($P->get_identity($scfg, $sid), $st->{instance_id}, "get_identity: the service's instance_id");
        is($P->get_identity($scfg, 'sanchap'), $st->{instance_id}, 'the same for every storage on that service');
    } else {
        eval { $P->get_identity($scfg, $sid) };
        like($@, qr/reports no instance_id/, 'get_identity: a service without instance_id is named as too old');
    }
});

# --- failures say what is wrong
{
    local $ENV{PVESAN_CA} = '/etc/ssl/certs/ca-certificates.crt';
    eval { $P->status($sid, $scfg, {}) };
    like($@, qr/certificate|cannot reach/i, 'an untrusted certificate is refused with ssl_verify_peer 1');
    ok(scalar($P->status($sid, { %$scfg, ssl_verify_peer => 0 }, {})), 'ssl_verify_peer 0 skips verification');
}
$P->on_update_hook($sid, $scfg, auth_token => 'pvs_nosuchtoken_0123456789abcdef');
eval { $P->status($sid, $scfg, {}) };
like($@, qr/401|token|auth/i, 'a bad token: status fails with the reason') and note $@;
$P->on_delete_hook($sid, $scfg);
ok(!-e "$tmp/run/status-$sid.json", 'removing the storage drops its cached status');
eval { $P->status($sid, $scfg, {}) };
like($@, qr/pvesm set san --auth_token/, 'no token: the error says how to set it');

# --- syslog: every call tagged, arguments shown, the token never
for my $m (qw(alloc_image free_image list_images status path volume_resize volume_snapshot
    volume_snapshot_rollback volume_snapshot_delete create_base clone_image rename_volume
    volume_export volume_import volume_snapshot_info qemu_blockdev_options)) {
    ok(scalar(grep { /^pvesan: \Q$m\E\(/ } @log), "$m is logged");
}
ok(scalar(grep { /^pvesan: alloc_image\(san, 100, raw, undef, 65536\)$/ } @log), 'with its arguments');
ok(!grep({ index($_, $svc->{token}) >= 0 || index($_, $chap_token) >= 0 } @log), 'no token appears in the log');

done_testing();
