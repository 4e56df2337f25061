# Runs INSIDE the kernel VM (scripts/kernel-vm.sh plugin; the service runs on the host,
# tests/kernel-vm/plugin-host.pl): the Proxmox plugin's kernel-initiator path with nothing
# doubled but pve-storage's base class - the real open-iscsi (iscsid, the kernel's iscsi_tcp),
# udev's by-path links, dm-multipath and multipathd, against the real service and tgtd on the
# host, for a tenant with CHAP and mutual CHAP and an initiator ACL of this node:
#   multipath 0: login with the secrets the plugin wrote into the node record, data through the
#                device, logout and the record gone, a grow seen by the kernel after the rescan,
#                export and import by dd
#   multipath 1: a session per portal, the dm-multipath map by the WWID, the map grown, flushed
use strict;
use warnings;
use Cwd qw(abs_path);
use FindBin;
use lib abs_path("$FindBin::Bin/../perl/lib"), abs_path("$FindBin::Bin/../../roles/pve_host/files");
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use Test::More;

my $root = abs_path("$FindBin::Bin/../..");
my $env = do {
    my $f = $ENV{PVESAN_KVM_ENV} or plan skip_all => 'run by scripts/kernel-vm.sh plugin';
    open(my $fh, '<', $f) or die "$f: $!";
    local $/;
    decode_json(<$fh>);
};
my $MiB = 1024 * 1024;

# the pvesan CLI: the checkout's service package on the VM's Python (the same Debian 3.11)
open(my $w, '>', '/root/pvesan') or die;
print $w "#!/bin/sh\nexec env PYTHONPATH='$root/service/src' python3 -m pvesan_service.cli \"\$@\"\n";
close($w);
chmod(0755, '/root/pvesan');

use PVE::Storage;
require PVESANPlugin;
my $P = 'PVE::Storage::Custom::PVESANPlugin';
no warnings 'once';
$PVE::Storage::Custom::PVESANPlugin::PVESAN_CLI = '/root/pvesan';
$PVE::Storage::Custom::PVESANPlugin::PRIV_DIR = '/root/priv/storage';
$PVE::Storage::Custom::PVESANPlugin::STATUS_CACHE_DIR = '/run/pvesan-kvm-test';
my @log;
$PVE::Storage::Custom::PVESANPlugin::LOGGER = sub { push @log, @_ };
$ENV{PVESAN_CA} = $env->{ca};

sub sh { my ($cmd) = @_; my $out = qx($cmd 2>&1); return ($? >> 8, $out); }
sub sessions { my (undef, $out) = sh('iscsiadm -m session'); return scalar(grep { /^tcp: / } split(/\n/, $out)); }
sub size_of { my ($dev) = @_; my (undef, $out) = sh("blockdev --getsize64 '$dev'"); return 0 + $out; }
sub wait_for { my ($what) = @_; for (1 .. 150) { return 1 if $what->(); select(undef, undef, undef, 0.2); } return 0; }

sh('iscsiadm -m node -o delete');
sh('systemctl start iscsid');
sh('mkdir -p /etc/multipath/conf.d');
open(my $mc, '>', '/etc/multipath/conf.d/pvesan.conf') or die;
print $mc "defaults {\n\tfind_multipaths on\n\tuser_friendly_names no\n}\n"
    . "devices {\n\tdevice {\n\t\tvendor \"PVESAN\"\n\t\tproduct \".*\"\n\t\tpath_grouping_policy multibus\n"
    . "\t\tno_path_retry 12\n\t}\n}\n";
close($mc);
sh('modprobe dm_multipath; systemctl start multipathd');
is(sessions(), 0, 'no session at the start');

my $base = { type => 'pvesan', api_url => $env->{api_url}, ssl_verify_peer => 1, content => { images => 1 }, shared => 1 };
$P->on_add_hook('kvm', $base, auth_token => $env->{token});

# --- multipath 0: CHAP on one portal
my $scfg = { %$base };
my $vol = $P->alloc_image('kvm', $scfg, 100, 'raw', undef, 32 * 1024);
ok($P->activate_volume('kvm', $scfg, $vol, undef, {}), 'activate_volume: CHAP login on the kernel initiator');
my $dev = $P->path($scfg, $vol, 'kvm');
like($dev, qr{^/dev/disk/by-path/ip-10\.0\.2\.2:\d+-iscsi-iqn\.\S+-lun-1$}, "path: the by-path device ($dev)");
ok(-b $dev, 'which udev made');
is(sessions(), 1, 'one session');
is_deeply($P->qemu_blockdev_options($scfg, 'kvm', $vol, undef, {}), { driver => 'host_device', filename => $dev },
    'qemu_blockdev_options: host_device');
sh("dd if=/dev/urandom of=/root/data bs=1M count=4 status=none");
my $want = sha256_hex(do { local (@ARGV, $/) = ('/root/data'); <> });
is((sh("dd if=/root/data of='$dev' bs=1M oflag=direct status=none"))[0], 0, 'data written through the device');
ok($P->deactivate_volume('kvm', $scfg, $vol, undef, {}), 'deactivate_volume');
is(sessions(), 0, 'logged out');
ok(!-e $dev, 'the device is gone');
ok(!glob('/etc/iscsi/nodes/*'), 'and the node record with the secrets');
ok($P->activate_volume('kvm', $scfg, $vol, undef, {}), 'activate_volume again');
my (undef, $got) = sh("dd if='$dev' bs=1M count=4 iflag=direct status=none | sha256sum");
is((split(/\s/, $got))[0], $want, 'the data is back after a new login');
$P->volume_resize($scfg, 'kvm', $vol, 64 * $MiB, 1);
ok(wait_for(sub { size_of($dev) == 64 * $MiB }), 'grown to 64 MiB: the kernel sees it after the rescan');
open(my $out, '>', '/root/export') or die;
$P->volume_export($scfg, 'kvm', $out, $vol, 'raw+size', undef, undef, 0);
close($out);
is(-s '/root/export', 8 + 64 * $MiB, 'volume_export through the device');
open(my $in, '<', '/root/export') or die;
my $copy = $P->volume_import($scfg, 'kvm', $in, 'vm-101-disk-0', 'raw+size', undef, undef, 0, 0);
close($in);
is($copy, 'kvm:vm-101-disk-0', 'volume_import of it');
is(sessions(), 1, 'the import logged out of the new volume again, the first stays logged in');
$P->activate_volume('kvm', $scfg, 'vm-101-disk-0', undef, {});
my $dev2 = $P->path($scfg, 'vm-101-disk-0', 'kvm');
(undef, $got) = sh("dd if='$dev2' bs=1M count=4 iflag=direct status=none | sha256sum");
is((split(/\s/, $got))[0], $want, 'the imported volume has the data');
$P->free_image('kvm', $scfg, $_, 0) for ('vm-101-disk-0', $vol);
is(sessions(), 0, 'free_image logged out');

# --- multipath 1: CHAP on both portals, dm-multipath on top
my $mcfg = { %$base, multipath => 1 };
my $mvol = $P->alloc_image('kvm', $mcfg, 200, 'raw', undef, 16 * 1024);
ok($P->activate_volume('kvm', $mcfg, $mvol, undef, {}), 'activate_volume with multipath 1');
is(sessions(), scalar(@{ $env->{portals} }), 'a session per portal');
my $wwid = PVE::Storage::Custom::PVESANPlugin::_volume_show('kvm', $mcfg, $mvol)->{export}{wwid} // '';
sh('multipath -r');
ok(wait_for(sub { -b "/dev/mapper/$wwid" }), "multipathd made the map /dev/mapper/$wwid");
is($P->path($mcfg, $mvol, 'kvm'), "/dev/mapper/$wwid", 'path: the map');
$P->volume_resize($mcfg, 'kvm', $mvol, 48 * $MiB, 1);
ok(wait_for(sub { size_of("/dev/mapper/$wwid") == 48 * $MiB }), 'the map grew to 48 MiB (paths rescanned, map resized)');
ok($P->deactivate_volume('kvm', $mcfg, $mvol, undef, {}), 'deactivate_volume');
ok(!-e "/dev/mapper/$wwid", 'the map is flushed');
is(sessions(), 0, 'every path logged out');
$P->free_image('kvm', $mcfg, $mvol, 0);

ok(!grep({ index($_, $env->{chap_password}) >= 0 || index($_, $env->{mutual_password}) >= 0 || index($_, $env->{token}) >= 0 } @log),
    'no secret in any of the ' . scalar(@log) . ' log lines (every command the plugin ran among them)');
sh('systemctl stop multipathd');
unlink('/etc/multipath/conf.d/pvesan.conf');
done_testing();
