# The plugin's kernel-initiator path (`multipath 1`): activate_volume logs in through open-iscsi
# on every portal, path() and qemu_blockdev_options() give the dm-multipath map (or the by-path
# device before multipathd made one), deactivate_volume flushes the map and logs out.
#
# The service, the pvesan CLI and tgtd are real (PVESANTest::Service). This kernel has no iSCSI
# initiator, so `iscsiadm` and `multipath` are test doubles written below: they answer with the
# messages and exit codes a real open-iscsi 2.1.8 / multipath-tools 0.9.4 gave for the same calls
# in the kernel VM (tests/unit/plugins/modules/fixtures/iscsi/kernel-vm/, commands.tsv), and do
# what the kernel and udev do on login (a by-path link to a block device).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../../roles/pve_host/files";
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use Test::More;

my ($block) = grep { -b $_ } qw(/dev/loop0 /dev/vda /dev/sda /dev/nvme0n1);
plan skip_all => 'no block device to stand for the iSCSI disk' if !$block;

use PVESANTest::Service qw(start_service);
my $svc = start_service();
END { $svc->stop() if $svc; }

use PVE::Storage;
require PVESANPlugin;
my $P = 'PVE::Storage::Custom::PVESANPlugin';

my $state = tempdir(CLEANUP => 1);
my $bin = "$state/bin";
make_path($bin, "$state/dev/disk/by-path", "$state/dev/mapper");
my $recorded = "$FindBin::Bin/../unit/plugins/modules/fixtures/iscsi/kernel-vm";

# iscsiadm: node records, sessions and by-path links in $state, messages as recorded.
write_script("$bin/iscsiadm", <<'EOF');
my $state = $ENV{FAKE_INITIATOR};
open(my $calls, '>>', "$state/calls") or die; print $calls "iscsiadm @ARGV\n"; close($calls);
my %a; my @args = @ARGV;
while (@args) { my $k = shift @args; $a{$k} = ($k =~ /^--(login|logout)$/) ? 1 : shift @args; }
my @sessions = -e "$state/sessions" ? do { open(my $f, '<', "$state/sessions") or die; map { chomp; $_ } <$f> } : ();
sub save { open(my $f, '>', "$state/sessions") or die; print $f map { "$_\n" } @_; close($f); }
if ($a{'-m'} eq 'session') {
    if (!@sessions) { print STDERR "iscsiadm: No active sessions.\n"; exit 21; }
    my $n = 0;
    printf("tcp: [%d] %s,1 %s (non-flash)\n", ++$n, split(/ /, $_)) for @sessions;
    exit 0;
}
my ($iqn, $portal) = ($a{'-T'}, $a{'-p'});
(my $p = $portal) =~ s/:(\d+)$/,$1/;
my $link = "$state/dev/disk/by-path/ip-$portal-iscsi-$iqn-lun-1";
my $node = "$state/node-" . join('-', unpack('H*', "$portal $iqn"));
if (($a{'-o'} // '') eq 'new') {
    open(my $f, '>', $node) or die; close($f);
    print "New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] $p,-1 $iqn] added\n";
    exit 0;
}
if ($a{'--login'}) {
    if (!-e $node) { print STDERR "iscsiadm: No records found\n"; exit 21; }
    if (grep { $_ eq "$portal $iqn" } @sessions) {
        print STDERR "iscsiadm: default: 1 session requested, but 1 already present.\n",
            "iscsiadm: Could not log into all portals\n";
        exit 15;
    }
    save(@sessions, "$portal $iqn");
    symlink($ENV{FAKE_BLOCK_DEVICE}, $link) or die "symlink: $!";
    print "Logging in to [iface: default, target: $iqn, portal: $p]\n",
        "Login to [iface: default, target: $iqn, portal: $p] successful.\n";
    exit 0;
}
if ($a{'--logout'}) {
    if (!grep { $_ eq "$portal $iqn" } @sessions) { print STDERR "iscsiadm: No matching sessions found\n"; exit 21; }
    save(grep { $_ ne "$portal $iqn" } @sessions);
    unlink($link);
    print "Logging out of session [sid: 1, target: $iqn, portal: $p]\n",
        "Logout of [sid: 1, target: $iqn, portal: $p] successful.\n";
    exit 0;
}
die "fake iscsiadm: unexpected call @ARGV\n";
EOF

# multipath -f <map>: removes the map multipathd made (the test stands in for multipathd).
write_script("$bin/multipath", <<'EOF');
my $state = $ENV{FAKE_INITIATOR};
open(my $calls, '>>', "$state/calls") or die; print $calls "multipath @ARGV\n"; close($calls);
die "fake multipath: unexpected call @ARGV\n" if @ARGV != 2 || $ARGV[0] ne '-f';
unlink("$state/dev/mapper/$ARGV[1]") or do { print STDERR "$ARGV[1]: map in use\n"; exit 1 };
exit 0;
EOF

$ENV{PATH} = "$bin:$ENV{PATH}";
$ENV{FAKE_INITIATOR} = $state;
$ENV{FAKE_BLOCK_DEVICE} = $block;
$ENV{PVESAN_CA} = $svc->{ca};
no warnings 'once';
$PVE::Storage::Custom::PVESANPlugin::PVESAN_CLI = $svc->{cli};
$PVE::Storage::Custom::PVESANPlugin::PRIV_DIR = "$state/priv";
$PVE::Storage::Custom::PVESANPlugin::DEV_DIR = "$state/dev";
my @log;
$PVE::Storage::Custom::PVESANPlugin::LOGGER = sub { push @log, @_ };

# the test doubles answer as the recorded real tools did
ok(-e "$recorded/commands.tsv", 'recorded open-iscsi output is there');
is(slurp("$recorded/session-none.err"), "iscsiadm: No active sessions.\n", 'recorded: no session message');
like(slurp("$recorded/session-two.out"), qr/^tcp: \[1\] \S+:\d+,1 iqn\S+ \(non-flash\)$/m, 'recorded: session line format');

my $sid = 'san';
my $scfg = { type => 'pvesan', api_url => $svc->{api_url}, ssl_verify_peer => 1, content => { images => 1 },
    shared => 1, multipath => 1 };
$P->on_add_hook($sid, $scfg, auth_token => $svc->{token});
my $vol = $P->alloc_image($sid, $scfg, 100, 'raw', undef, 16 * 1024);
is($vol, 'vm-100-disk-0', 'allocated');
my $info = do { local $ENV{PVESAN_TENANT} = 'cluster1'; $svc->admin('volume', 'show', 'vm-100-disk-0') };
my ($iqn, $wwid) = ($info->{export}{iqn}, $info->{export}{wwid});
my @portals = @{ $info->{export}{portals} };
like($wwid, qr/^36[0-9a-f]{31}$/, "the service reports the LUN's WWID ($wwid)");

ok($P->activate_volume($sid, $scfg, $vol, undef, {}), 'activate_volume');
is_deeply([calls()], [map {
    ("iscsiadm -m node -T $iqn -p $_ -o new", 'iscsiadm -m session', "iscsiadm -m node -T $iqn -p $_ --login")
} @portals], 'a node record and one login per portal');
my $bypath = "$state/dev/disk/by-path/ip-$portals[0]-iscsi-$iqn-lun-1";
is(scalar $P->path($scfg, $vol, $sid), $bypath, 'before multipathd made the map: the by-path device');

ok($P->activate_volume($sid, $scfg, $vol, undef, {}), 'activate_volume again (live migration, a second disk)');
is_deeply([grep { /--login/ } calls()], [], 'no second login while the sessions are up');

symlink($block, "$state/dev/mapper/$wwid") or die;    # what multipathd does on the new paths
is(scalar $P->path($scfg, $vol, $sid), "$state/dev/mapper/$wwid", 'path: the multipath map, named by the WWID');
is_deeply($P->qemu_blockdev_options($scfg, $sid, $vol, undef, {}),
    { driver => 'host_device', filename => "$state/dev/mapper/$wwid" }, 'qemu_blockdev_options: the map');

ok($P->deactivate_volume($sid, $scfg, $vol, undef, {}), 'deactivate_volume');
is_deeply([calls()], ["multipath -f $wwid", map { "iscsiadm -m node -T $iqn -p $_ --logout" } @portals],
    'the map flushed, then one logout per portal');
ok(!-e "$state/dev/mapper/$wwid" && !-e $bypath, 'no device left');
ok($P->deactivate_volume($sid, $scfg, $vol, undef, {}), 'deactivate_volume again: nothing to do, no error');
is_deeply([grep { !/--logout/ } calls()], [], 'and only logouts tried (they fail quietly)');

$P->free_image($sid, $scfg, $vol, 0);
ok(!grep({ $_ eq $iqn } @{ $svc->targets() }), 'free_image: the export is gone');
ok(!grep({ index($_, $svc->{token}) >= 0 } @log), 'the token is in no log line');
done_testing();

sub write_script {
    my ($path, $body) = @_;
    open(my $f, '>', $path) or die "$path: $!";
    print $f "#!$^X\nuse strict;\nuse warnings;\n$body";
    close($f);
    chmod(0755, $path) or die;
}

sub slurp {
    my ($path) = @_;
    open(my $f, '<', $path) or die "$path: $!";
    local $/;
    return <$f>;
}

sub calls {    # the calls made since the last look
    my $file = "$state/calls";
    return () if !-e $file;
    my @lines = map { chomp; $_ } split(/^/m, slurp($file));
    unlink($file);
    return @lines;
}
