# The dev-time check (scripts/proxmox-check.sh check): our plugin under Proxmox VE's own code.
#
# Proxmox's real pve-storage 9.1.7, pve-common 9.2.1, pve-cluster 9.1.6 and qemu-server 9.2.6 are
# on @INC (stand-ins only for pmxcfs's IPC, RPCEnvironment's permission checks and librados, see
# tests/proxmox/lib); the plugin is installed where pve-storage's loader looks for custom
# plugins, /etc/pve is a plain directory, all of it in a private mount namespace. `pvesm` is
# pve-storage's own CLI. Behind the plugin: a real pvesan-service with a real tgtd
# (PVESANTest::Service). Every result is checked by data through iSCSI: qemu-io opens the
# -blockdev chain qemu-server's generate_drive_blockdev builds, or qemu-img runs as qemu-server's
# disk-move conversion runs it.
#
# What cannot run here: the kernel initiator (no iscsi_tcp, no iscsid), so for CHAP volumes the
# check stops at the login; tests/perl/20-plugin-kernel-initiator.t and the kernel VM cover it.
use strict;
use warnings;

use File::Temp qw(tempdir);
use IPC::Open3 qw(open3);
use JSON::PP;
use POSIX ();
use Test::More;

use PVESANTest::Service qw(start_service);

my $svc = start_service();
END { $svc->stop() if $svc; }
$ENV{PVESAN_CLI} = $svc->{cli};    # the plugin runs this CLI (on a node: /usr/local/bin/pvesan)
$ENV{PVESAN_CA} = $svc->{ca};      # the service's self-signed certificate (pve_host: system CA store)
my $MiB = 1024 * 1024;
my $node = (POSIX::uname())[1];
$node =~ s/\..*//;

# --- the real plugin loader: pve-storage's PVE/Storage.pm loads /usr/share/perl5/PVE/Storage/Custom/*.pm
my @load_warnings;
{
    local $SIG{__WARN__} = sub { push @load_warnings, $_[0]; };
    require PVE::Storage;
}
require PVE::RPCEnvironment;
require PVE::API2::Storage::Status;
require PVE::QemuServer::Blockdev;
require PVE::QemuServer::Drive;
require PVE::QemuServer::QemuImage;
PVE::RPCEnvironment->setup_default_cli_env();

diag("pve-storage $_->{version} ($_->{commit})") for map { source_info($_) } split(/:/, $ENV{PVE_SOURCE_DIRS} // '');
ok(PVE::Storage::Plugin->lookup('pvesan'), 'the real loader registered PVE::Storage::Custom::PVESANPlugin');
is_deeply([grep { /PVESAN/i } @load_warnings], [], 'with no warning (no "implementing an older storage API")')
    or diag(@load_warnings);
is(PVE::Storage::Custom::PVESANPlugin->api(), PVE::Storage::APIVER(), 'api() is APIVER (' . PVE::Storage::APIVER() . ')');

my @log;
{
    no warnings 'once';
    $PVE::Storage::Custom::PVESANPlugin::LOGGER = sub { push @log, @_ };    # this process's syslog lines
}

sub run {    # a command, stdout and stderr together
    my (@cmd) = @_;
    my $pid = open3(my $in, my $out, undef, @cmd);
    close($in);
    local $/;
    my $text = <$out> // '';
    waitpid($pid, 0);
    $text =~ s/^setlogsock\(\).*\n//mg;    # no /dev/log on this machine
    return ($? >> 8, $text);
}
sub pvesm { return run('pvesm', @_); }
sub pvesm_ok {
    my ($name, @args) = @_;
    my ($rc, $out) = pvesm(@args);
    ok($rc == 0, "pvesm @args[0 .. ($#args > 1 ? 1 : $#args)]: $name") or diag($out);    # no secret in a test name
    return $out;
}

# --- storages added with pvesm, as an admin does
my $tmp = tempdir(CLEANUP => 1);
mkdir("$tmp/dir") or die;
pvesm_ok('a dir storage', 'add', 'dir', 'dirstore', '--path', "$tmp/dir", '--content', 'images');
pvesm_ok('the pvesan storage, token as a sensitive property', 'add', 'pvesan', 'san', '--api_url', $svc->{api_url},
    '--auth_token', $svc->{token}, '--content', 'images');
my $cfgtext = slurp('/etc/pve/storage.cfg');
like($cfgtext, qr/^pvesan: san\n\tapi_url \Q$svc->{api_url}\E\n\tcontent images\n\n/m, 'storage.cfg has the section');
ok(PVE::Storage::config()->{ids}->{san}->{shared}, 'shared without `shared 1` (the plugin is in @SHARED_STORAGE)');
ok(index($cfgtext, $svc->{token}) < 0, 'and not the token');
is(slurp('/etc/pve/priv/storage/san.pw'), "$svc->{token}\n", 'the token is in priv/storage/san.pw');
is((stat('/etc/pve/priv/storage/san.pw'))[2] & 07777, 0600, 'which is mode 0600');

my ($rc, $out) = pvesm('status', '--storage', 'san');
like($out, qr/^san\s+pvesan\s+active\s+\d+/m, "pvesm status: active with real numbers") or diag($out);

# --- allocate (named and next free), list, path
pvesm_ok('a named volume', 'alloc', 'san', 100, 'vm-100-disk-0', '64M');
$out = pvesm_ok('the next free name', 'alloc', 'san', 100, '', '32M');
like($out, qr/successfully created 'san:vm-100-disk-1'/, 'vm-100-disk-1');
$out = pvesm_ok('list', 'list', 'san');
like($out, qr/^san:vm-100-disk-0\s+raw\s+images\s+67108864\s+100$/m, 'pvesm list shows it, with its size');
$out = pvesm_ok('path', 'path', 'san:vm-100-disk-0');
like($out, qr{^iscsi://\Q$svc->{portal}\E/iqn\.\S+/1$}m, "a volume without CHAP: QEMU's libiscsi ($out)");

# --- -blockdev through PVE's filter and qemu-server's generate_drive_blockdev; data by qemu-io
my $cfg = PVE::Storage::config();
my $v0 = 'san:vm-100-disk-0';
PVE::Storage::activate_volumes($cfg, [$v0]);
my @filter_warnings;
my $bd = do {
    local $SIG{__WARN__} = sub { push @filter_warnings, $_[0]; };
    PVE::Storage::qemu_blockdev_options($cfg, $v0, undef, {});
};
is($bd->{driver}, 'iscsi', 'PVE::Storage::qemu_blockdev_options: the iscsi driver');
is_deeply(\@filter_warnings, [], 'PVE\'s filter dropped nothing');
like($bd->{'initiator-name'} // '', qr/^iqn\./, "with the node's initiator name ($bd->{'initiator-name'})");

# What qemu-server gives QEMU for `scsi0: <volid>,discard=on,iothread=1,ssd=1` (the drive hash is
# what PVE::QemuServer::Drive::parse_drive returns for it; parse_drive itself needs the format
# PVE::QemuServer registers, and that module needs pve-network and more that this check leaves out).
sub chain {
    my ($volid, %opts) = @_;
    my $drive = { file => $volid, interface => 'scsi', index => 0, %opts };
    return PVE::QemuServer::Blockdev::generate_drive_blockdev($cfg, $drive, '10.0', {});
}
my %TUNED = (discard => 'on', iothread => 1, ssd => 1);
sub qio {
    my ($cmd, $volid) = @_;
    my $json = encode_json(chain($volid, %TUNED));
    my ($rc, $out) = run('qemu-io', '--object', 'throttle-group,id=throttle-drive-scsi0', '-c', $cmd, "json:$json");
    note("qemu-io $cmd: $out") if $rc || $out =~ /fail/i;
    return $rc == 0 && $out !~ /Pattern verification failed|failed/i;
}
my $chain = chain($v0, %TUNED);
is($chain->{driver}, 'throttle', 'generate_drive_blockdev: throttle');
is($chain->{file}->{driver}, 'raw', '-> raw');
is($chain->{file}->{file}->{driver}, 'iscsi', '-> iscsi, our options');
ok(qio('write -P 0xa5 0 1M', $v0), 'qemu-io writes through the generated -blockdev chain');
ok(qio('read -P 0xa5 0 1M', $v0), 'and reads it back');

# --- grow
PVE::Storage::volume_resize($cfg, $v0, 128 * $MiB, 0);
my (undef, $cap) = run('iscsi-readcapacity16', '-s', (pvesm('path', $v0))[1] =~ s/\s+$//r);
like($cap, qr/^134217728$/m, 'volume_resize: the initiator sees 128 MiB');
eval { PVE::Storage::volume_resize($cfg, $v0, 256 * $MiB, 0, 'snap1') };
like($@, qr/cannot resize snapshot/, 'API 15 $snapname: refused with the reason');

# --- snapshot, rollback, delete; info; no snapshot as a -blockdev
PVE::Storage::volume_snapshot($cfg, $v0, 'snap1');
ok(qio('write -P 0x5a 0 1M', $v0), 'overwritten after the snapshot');
PVE::Storage::volume_snapshot_rollback($cfg, $v0, 'snap1');
ok(qio('read -P 0xa5 0 1M', $v0), 'volume_snapshot_rollback: the old data is back');
my $sinfo = PVE::Storage::volume_snapshot_info($cfg, $v0);
ok($sinfo->{snap1} && $sinfo->{snap1}->{timestamp} > 0, 'PVE::Storage::volume_snapshot_info lists snap1');
eval { PVE::Storage::qemu_blockdev_options($cfg, $v0, undef, { 'snapshot-name' => 'snap1' }) };
like($@, qr/cannot be attached/, 'a snapshot as -blockdev: refused with the reason');
my ($size, $format, $used, $parent, $ctime) = PVE::Storage::volume_size_info($cfg, $v0);
is($size, 128 * $MiB, 'volume_size_info: size');
like($ctime // '', qr/^\d+$/, 'ctime in epoch seconds');
ok($used > 0 && $used <= $size, "used $used");

# --- clone from a snapshot, template and linked clone, rename
my $from_snap = PVE::Storage::vdisk_clone($cfg, $v0, 102, 'snap1');
is($from_snap, 'san:vm-102-disk-0', 'vdisk_clone from a snapshot');
ok(qio('read -P 0xa5 0 1M', $from_snap), 'with the snapshot\'s data');
my $base = PVE::Storage::vdisk_create_base($cfg, 'san:vm-100-disk-1');
is($base, 'san:base-100-disk-1', 'vdisk_create_base (qm template)');
ok(qio('write -P 0x11 0 64k', $base) || 1, 'a template is read-only to guests (write tried)');
my $linked = PVE::Storage::vdisk_clone($cfg, $base, 101, undef);
is($linked, 'san:base-100-disk-1/vm-101-disk-0', 'linked clone');
ok(qio('write -P 0x22 0 64k', $linked) && qio('read -P 0x22 0 64k', $linked), 'the linked clone is writable');
is(PVE::Storage::rename_volume($cfg, $from_snap, 103), 'san:vm-103-disk-0', 'rename_volume to VM 103');
eval { PVE::Storage::volume_snapshot_delete($cfg, $v0, 'snap1') };
like($@, qr/dependent clones \(vm-103-disk-0\)/, 'a snapshot with a clone made from it is kept, with the reason');
PVE::Storage::vdisk_free($cfg, 'san:vm-103-disk-0');
PVE::Storage::volume_snapshot_delete($cfg, $v0, 'snap1');
ok(!PVE::Storage::volume_snapshot_info($cfg, $v0)->{snap1}, 'volume_snapshot_delete once the clone is gone');

# --- export/import (pvesm), storage_migrate to and from a dir storage, disk move (qemu-img)
$out = pvesm_ok('to a file', 'export', $v0, 'raw+size', "$tmp/v0.raw+size");
is(-s "$tmp/v0.raw+size", 8 + 128 * $MiB, 'pvesm export: the raw+size stream');
$out = pvesm_ok('from the file', 'import', 'san:vm-104-disk-0', 'raw+size', "$tmp/v0.raw+size");
ok(qio('read -P 0xa5 0 1M', 'san:vm-104-disk-0'), 'pvesm import: the data');
my $migrated = eval { PVE::Storage::storage_migrate($cfg, $v0, undef, 'dirstore', {}) };
is($migrated, 'dirstore:100/vm-100-disk-0.raw', 'storage_migrate pvesan -> dir') or diag($@);
my $file = "$tmp/dir/images/100/vm-100-disk-0.raw";
ok(-s $file == 128 * $MiB && substr(slurp($file), 0, 1024 * 1024) eq "\xa5" x (1024 * 1024), 'the dir volume has the data');
my $back = eval { PVE::Storage::storage_migrate($cfg, $migrated, undef, 'san', { allow_rename => 1 }) };
like($back // '', qr/^san:vm-100-disk-\d+$/, "storage_migrate dir -> pvesan ($back)") or diag($@);
ok($back && qio('read -P 0xa5 0 1M', $back), 'with the data');
# qm disk move (offline): qemu-server's QemuImage::convert
my $dst = PVE::Storage::vdisk_alloc($cfg, 'dirstore', 105, 'raw', undef, 128 * 1024);
eval { PVE::QemuServer::QemuImage::convert($v0, $dst, 128 * $MiB) };
is($@, '', 'disk move pvesan -> dir (qemu-img convert of the iscsi:// path)');
ok(substr(slurp("$tmp/dir/images/105/" . ($dst =~ s/^.*\///r)), 0, 1024 * 1024) eq "\xa5" x (1024 * 1024), 'data moved');
my $dst2 = PVE::Storage::vdisk_alloc($cfg, 'san', 105, 'raw', undef, 128 * 1024);
eval { PVE::QemuServer::QemuImage::convert($dst, $dst2, 128 * $MiB) };
is($@, '', 'disk move dir -> pvesan');
ok(qio('read -P 0xa5 0 1M', $dst2), 'data moved');

# --- API 14: the identity API of pve-storage
my $ident = eval { PVE::API2::Storage::Status->identity({ node => $node, storage => 'san' }) };
my $st = $svc->admin('status');
if (defined($st->{instance_id})) {
    is_deeply($ident, { type => 'pvesan', id => $st->{instance_id} }, 'GET /storage/san/identity: the service\'s instance id');
} else {
    like($@, qr/reports no instance_id/, 'GET /storage/san/identity: this service reports no instance_id yet, '
        . 'and the API says so');
}

# --- CHAP (the tenant default): never in a path, an option, an argument or a log line
my $chap_pw = 'chap-' . join('', map { ('a' .. 'z', 0 .. 9)[rand 36] } 1 .. 20);
my $ctok = $svc->tenant_token('chapten', '--initiator', 'ALL', '--chap-user', 'chapten-node', '--chap-password', $chap_pw);
pvesm_ok('a storage of a CHAP tenant', 'add', 'pvesan', 'sanchap', '--api_url', $svc->{api_url},
    '--auth_token', $ctok, '--content', 'images');
pvesm_ok('a CHAP volume', 'alloc', 'sanchap', 200, 'vm-200-disk-0', '16M');
$out = pvesm_ok('its path', 'path', 'sanchap:vm-200-disk-0');
like($out, qr{^/dev/disk/by-path/ip-\S+-iscsi-iqn\.\S+-lun-1$}m, "the kernel initiator's device ($out)");
$cfg = PVE::Storage::config();
@filter_warnings = ();
my $cbd = do {
    local $SIG{__WARN__} = sub { push @filter_warnings, $_[0]; };
    PVE::Storage::qemu_blockdev_options($cfg, 'sanchap:vm-200-disk-0', undef, {});
};
is($cbd->{driver}, 'host_device', 'PVE::Storage::qemu_blockdev_options: host_device');
is_deeply(\@filter_warnings, [], 'nothing dropped by the filter (no user, no password-secret)');
my $drive_chain = chain('sanchap:vm-200-disk-0');
is($drive_chain->{file}->{file}->{driver}, 'host_device', 'qemu-server\'s chain: host_device');
eval { PVE::Storage::activate_volumes($cfg, ['sanchap:vm-200-disk-0']) };
like($@, qr/iscsiadm .*--login/, 'activation gets to the login, which needs the kernel initiator this machine lacks');
ok(index($@, $chap_pw) < 0, 'the error has no secret') or diag($@);
ok(!glob('/etc/iscsi/nodes/*'), 'after the failed login no node record (with its secret) is left');
ok(!grep({ index($_, $chap_pw) >= 0 } @log, $out, encode_json($cbd), encode_json($drive_chain)),
    'the CHAP secret is in no log line, path or option');

# --- errors: a bad token, a service that is down
my $good = slurp('/etc/pve/priv/storage/san.pw') =~ s/\n//r;
pvesm_ok('a wrong token', 'set', 'san', '--auth_token', 'pvs_wrong_0123456789abcdefghij');
($rc, $out) = pvesm('list', 'san');
ok($rc != 0 && $out =~ /invalid or revoked token/, "pvesm list with a bad token: '$out'");
pvesm_ok('the token back', 'set', 'san', '--auth_token', $good);
($rc, $out) = pvesm('add', 'pvesan', 'sandown', '--api_url', 'https://127.0.0.1:1', '--auth_token', $good,
    '--content', 'images');
ok($rc != 0 && $out =~ /create storage failed: .*cannot reach/, "pvesm add of a storage whose service is down: '$out'");
# a storage whose service went down later (its section written by hand)
open(my $cfh, '>>', '/etc/pve/storage.cfg') or die;
print $cfh "pvesan: sandown\n\tapi_url https://127.0.0.1:1\n\tcontent images\n\n";
close($cfh);
open(my $tfh, '>', '/etc/pve/priv/storage/sandown.pw') or die;
print $tfh "$good\n";
close($tfh);
($rc, $out) = pvesm('alloc', 'sandown', 100, '', '1M');
ok($rc != 0 && $out =~ /cannot reach/, "pvesm alloc on a down service: '$out'");
($rc, $out) = pvesm('status', '--storage', 'sandown');
like($out, qr/cannot reach|inactive/, "pvesm status: '$out'");

# --- free everything; the service and tgtd have nothing left of ours
$cfg = PVE::Storage::config();
for my $v (reverse sort map { $_->{volid} } @{ PVE::Storage::vdisk_list($cfg, 'san')->{san} }) {
    eval { PVE::Storage::vdisk_free($cfg, $v) };
    is($@, '', "vdisk_free $v");
}
pvesm_ok('the CHAP volume', 'free', 'sanchap:vm-200-disk-0');
is_deeply(PVE::Storage::vdisk_list($cfg, 'san')->{san}, [], 'nothing left on san');
is_deeply($svc->targets(), [], 'tgtd exports nothing any more');

# --- the calls of this process: no secret in any syslog line; status asked rarely
ok(!grep({ index($_, $svc->{token}) >= 0 || index($_, $ctok) >= 0 || index($_, $chap_pw) >= 0 } @log),
    'no token or CHAP secret in the plugin\'s syslog lines (' . scalar(@log) . ' lines)');
my @status_runs = grep { /exec\(\S+ --json status/ } @log;
my @cli_runs = grep { /exec\(\S+ --json / } @log;
my $windows = 1 + int((time() - $^T) / $PVE::Storage::Custom::PVESANPlugin::STATUS_TTL);
ok(@status_runs <= 2 * $windows, scalar(@status_runs) . ' of ' . scalar(@cli_runs) . ' CLI runs of this process were '
    . "`pvesan status`: at most one per storage (san, sanchap) and $PVE::Storage::Custom::PVESANPlugin::STATUS_TTL s "
    . "($windows windows)");

done_testing();

sub slurp {
    my ($path) = @_;
    open(my $f, '<', $path) or die "$path: $!";
    local $/;
    return <$f>;
}

sub source_info {
    my ($dir) = @_;
    return () if $dir !~ /pve-storage-/;
    my $commit = slurp("$dir/.commit") =~ s/\s+//gr;
    my ($version) = $dir =~ /-([0-9.]+)$/;
    return { version => $version, commit => $commit };
}
