# The plugin's kernel-initiator path: every volume with CHAP (the tenant default), and every
# volume of a storage with `multipath 1`. activate_volume writes open-iscsi node records (CHAP
# names with `iscsiadm -o update`, the secrets into the record file, never on a command line) and
# logs in; path() and qemu_blockdev_options() give the dm-multipath map or the by-path device;
# resize rescans; deactivate_volume flushes the map, logs out and deletes the records.
#
# Real here: the service, the pvesan CLI and tgtd (PVESANTest::Service), and open-iscsi's node
# database: the test runs in a private mount namespace with a tmpfs on /etc/iscsi, where the real
# iscsiadm 2.1.8 creates, updates, shows and deletes node records (that needs no iscsid). This
# kernel has no iSCSI initiator, so logging in, out, the session list and rescans are a test
# double below: it answers with the messages and exit codes open-iscsi 2.1.8 gave in the kernel VM
# (tests/unit/plugins/modules/fixtures/iscsi/kernel-vm/ and kernel-vm-chap/, where a real kernel
# initiator logged in with CHAP and mutual CHAP from records the plugin's own code wrote), and does what the kernel
# does: it logs in to the real tgtd with the record's credentials (libiscsi's iscsi-inq, so a
# wrong CHAP secret fails as it would) and attaches the volume's own backing file as a loop
# device (direct I/O, as tgtd writes it) behind the by-path link, so data written through the
# "kernel device" is the data QEMU reads over iSCSI.
use strict;
use warnings;
use FindBin;

BEGIN {
    # A private mount namespace: /etc/iscsi becomes a tmpfs only for this test.
    if (!$ENV{PVESAN_TEST_ISCSI_NS} && $> == 0 && -x '/usr/bin/unshare') {
        $ENV{PVESAN_TEST_ISCSI_NS} = 1;
        exec('/usr/bin/unshare', '--mount', '--propagation', 'private', $^X, $0, @ARGV) or die "unshare: $!";
    }
}

use lib "$FindBin::Bin/lib", "$FindBin::Bin/../../roles/pve_host/files";
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;

my ($real_iscsiadm) = grep { -x } qw(/usr/sbin/iscsiadm /sbin/iscsiadm);
plan skip_all => 'needs root and unshare (a private /etc/iscsi)' if !$ENV{PVESAN_TEST_ISCSI_NS};
plan skip_all => 'needs open-iscsi (iscsiadm) and libiscsi-bin (iscsi-inq)'
    if !$real_iscsiadm || system('sh', '-c', 'command -v iscsi-inq losetup >/dev/null');

use PVESANTest::Service qw(start_service);
my $svc = start_service();
END { $svc->stop() if $svc; }

use PVE::Storage;
require PVESANPlugin;
my $P = 'PVE::Storage::Custom::PVESANPlugin';
my $MiB = 1024 * 1024;

# open-iscsi's node database of this test: a tmpfs over /etc/iscsi, with the host's config
my %keep = map { my $f = "/etc/iscsi/$_"; -f $f ? ($_ => slurp($f)) : () } qw(iscsid.conf);
system('mount', '-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', '/etc/iscsi') == 0 or die "mount tmpfs on /etc/iscsi failed\n";
while (my ($f, $text) = each %keep) { spew("/etc/iscsi/$f", $text); }
my $NODE_IQN = 'iqn.1993-08.org.debian:01:pvesan-kernel-test';
spew('/etc/iscsi/initiatorname.iscsi', "InitiatorName=$NODE_IQN\n");

my $state = tempdir(CLEANUP => 1);
my $bin = "$state/bin";
make_path($bin, "$state/dev/disk/by-path", "$state/dev/mapper", "$state/priv");
my $recorded = "$FindBin::Bin/../unit/plugins/modules/fixtures/iscsi/kernel-vm";
# CHAP logins recorded with the plugin's own node records (tests/kernel-vm/record-iscsi.sh, iscsi_chap)
my $recorded_chap = "$FindBin::Bin/../unit/plugins/modules/fixtures/iscsi/kernel-vm-chap";

# iscsiadm: node records by the real iscsiadm; login, logout, sessions and rescans as the
# kernel does them, with the messages open-iscsi printed in the kernel VM.
write_script("$bin/iscsiadm", <<'EOF');
my $state = $ENV{FAKE_INITIATOR};
my $real = $ENV{REAL_ISCSIADM};
open(my $calls, '>>', "$state/calls") or die; print $calls "iscsiadm @ARGV\n"; close($calls);
sub recorded {    # a message open-iscsi printed in the kernel VM, for this target and portal
    my ($name, $iqn, $p) = @_;
    open(my $f, '<', "$ENV{FAKE_RECORDED_CHAP}/$name") or die "$name: $!";
    local $/;
    my $text = <$f>;
    $text =~ s/\Q$ENV{FAKE_RECORDED_IQN}\E/$iqn/g;
    $text =~ s/\Q$ENV{FAKE_RECORDED_PORTAL}\E/$p/g;
    return $text;
}
my %a; my @args = @ARGV;
while (@args) { my $k = shift @args; $a{$k} = ($k =~ /^(--login|--logout|-R|-S)$/) ? 1 : shift @args; }
my @sessions = -e "$state/sessions" ? do { open(my $f, '<', "$state/sessions") or die; map { chomp; $_ } <$f> } : ();
sub save { open(my $f, '>', "$state/sessions") or die; print $f map { "$_\n" } @_; close($f); }
if ($a{'-m'} eq 'session') {
    if (!@sessions) { print STDERR "iscsiadm: No active sessions.\n"; exit 21; }
    my $n = 0;
    printf("tcp: [%d] %s,1 %s (non-flash)\n", ++$n, (split(/ /, $_))[0, 1]) for @sessions;
    exit 0;
}
exec($real, @ARGV) if $a{'-m'} eq 'node' && !$a{'--login'} && !$a{'--logout'} && !$a{'-R'};
my ($iqn, $portal) = ($a{'-T'}, $a{'-p'});
(my $p = $portal) =~ s/:(\d+)$/,$1/;
my $link = "$state/dev/disk/by-path/ip-$portal-iscsi-$iqn-lun-1";
my ($sid) = grep { (split(/ /, $sessions[$_]))[0] eq $portal && (split(/ /, $sessions[$_]))[1] eq $iqn } 0 .. $#sessions;
if ($a{'--login'}) {
    my $rec = qx('$real' -m node -T '$iqn' -p '$portal' -S 2>&1);
    if ($? != 0) { print STDERR "iscsiadm: No records found\n"; exit 21; }
    if (defined($sid)) {
        print STDERR "iscsiadm: default: 1 session requested, but 1 already present.\n",
            "iscsiadm: Could not log into all portals\n";
        exit 15;
    }
    my %r = map { /^(node\.session\.auth\.\S+) = (.*)$/ ? ($1, $2 eq '<empty>' ? '' : $2) : () } split(/\n/, $rec);
    my $auth = ($r{'node.session.auth.authmethod'} // '') eq 'CHAP'
        ? "$r{'node.session.auth.username'}%$r{'node.session.auth.password'}@" : '';
    # the login the kernel would make: libiscsi against the real tgtd, with the record's secret
    my $inq = qx(iscsi-inq -i '$ENV{NODE_IQN}' 'iscsi://$auth$portal/$iqn/1' 2>&1);
    my $mutual_ok = !$r{'node.session.auth.username_in'}
        || ($r{'node.session.auth.username_in'} eq $ENV{FAKE_TARGET_USER} && $r{'node.session.auth.password_in'} eq $ENV{FAKE_TARGET_PASSWORD});
    if ($? != 0 || !$mutual_ok) {
        # what open-iscsi printed for a wrong secret (24) or a target that fails mutual CHAP (19)
        my ($name, $rc) = $? != 0 ? ('login-wrong-password', 24) : ('login-wrong-mutual', 19);
        print recorded("$name.out", $iqn, $p);
        print STDERR recorded("$name.err", $iqn, $p);
        exit $rc;
    }
    # the LUN's backing store, as tgtd serves it
    my $show = qx(tgtadm -C $ENV{TGT_CONTROL} --lld iscsi --mode target --op show);
    my ($file) = $show =~ /^Target \d+: \Q$iqn\E\n(?:(?!Target \d+:).*\n)*?\s+Backing store path: (\/\S+)$/m
        or die "tgtd has no backing store for $iqn\n";
    chomp(my $dev = qx(losetup --direct-io=on -f --show '$file'));
    die "losetup failed\n" if $? != 0;
    save(@sessions, "$portal $iqn $dev");
    symlink($dev, $link) or die "symlink: $!";
    print "Logging in to [iface: default, target: $iqn, portal: $p]\n",
        "Login to [iface: default, target: $iqn, portal: $p] successful.\n";
    exit 0;
}
if (!defined($sid)) { print STDERR "iscsiadm: No matching sessions found\n"; exit 21; }
my $dev = (split(/ /, $sessions[$sid]))[2];
if ($a{'-R'}) {
    system('losetup', '-c', $dev) == 0 or die;    # the kernel re-reads the capacity
    print recorded('rescan.out', $iqn, $p) =~ s/\[sid: 1,/[sid: @{[$sid + 1]},/r;
    exit 0;
}
save(grep { $_ ne $sessions[$sid] } @sessions);
unlink($link);
system('losetup', '-d', $dev);
print "Logging out of session [sid: 1, target: $iqn, portal: $p]\n",
    "Logout of [sid: 1, target: $iqn, portal: $p] successful.\n";
exit 0;
EOF

# multipath -f <map> / multipathd resize map <map>: the test stands in for multipathd's maps.
write_script("$bin/multipath", <<'EOF');
my $state = $ENV{FAKE_INITIATOR};
open(my $calls, '>>', "$state/calls") or die; print $calls "multipath @ARGV\n"; close($calls);
die "fake multipath: unexpected call @ARGV\n" if @ARGV != 2 || $ARGV[0] ne '-f';
unlink("$state/dev/mapper/$ARGV[1]") or do { print STDERR "$ARGV[1]: map in use\n"; exit 1 };
exit 0;
EOF
write_script("$bin/multipathd", <<'EOF');
my $state = $ENV{FAKE_INITIATOR};
open(my $calls, '>>', "$state/calls") or die; print $calls "multipathd @ARGV\n"; close($calls);
die "fake multipathd: unexpected call @ARGV\n" if "@ARGV[0, 1]" ne 'resize map';
print "ok\n";
exit 0;
EOF

$ENV{PATH} = "$bin:$ENV{PATH}";
$ENV{FAKE_INITIATOR} = $state;
$ENV{REAL_ISCSIADM} = $real_iscsiadm;
$ENV{NODE_IQN} = $NODE_IQN;
$ENV{TGT_CONTROL} = $svc->{tgt_control};
$ENV{FAKE_RECORDED_CHAP} = $recorded_chap;
$ENV{FAKE_RECORDED_IQN} = 'iqn.2026-11.org.pvesan:chap.v-1b2c3d4e5f607182';
$ENV{FAKE_RECORDED_PORTAL} = '10.0.2.2,13291';
$ENV{PVESAN_CA} = $svc->{ca};
no warnings 'once';
$PVE::Storage::Custom::PVESANPlugin::PVESAN_CLI = $svc->{cli};
$PVE::Storage::Custom::PVESANPlugin::PRIV_DIR = "$state/priv";
$PVE::Storage::Custom::PVESANPlugin::STATUS_CACHE_DIR = "$state/run";
$PVE::Storage::Custom::PVESANPlugin::DEV_DIR = "$state/dev";
my @log;
$PVE::Storage::Custom::PVESANPlugin::LOGGER = sub { push @log, @_ };

# the test double answers as the recorded real tools did
ok(-e "$recorded/commands.tsv", 'recorded open-iscsi output is there');
is(slurp("$recorded/session-none.err"), "iscsiadm: No active sessions.\n", 'recorded: no session message');
like(slurp("$recorded/session-two.out"), qr/^tcp: \[1\] \S+:\d+,1 iqn\S+ \(non-flash\)$/m, 'recorded: session line format');
# the CHAP recordings: a real kernel initiator logged in with the record the plugin's code wrote
my %rc = map { (split(/\t/))[0, 1] } split(/\n/, slurp("$recorded_chap/commands.tsv"));
is_deeply([@rc{qw(set-chap login logout login-wrong-password login-wrong-mutual node-delete)}], [0, 0, 0, 24, 19, 0],
    'recorded: CHAP + mutual CHAP login with the plugin\'s record; a wrong secret 24, a wrong target secret 19');
like(slurp("$recorded_chap/node-show.out"), qr/^node\.session\.auth\.password = \*{8}$/m,
    'recorded: iscsiadm without -S masks the secret');

sub volume_info {    # the service's view of a volume
    my ($tenant, $name) = @_;
    local $ENV{PVESAN_TENANT} = $tenant;
    return $svc->admin('volume', 'show', $name);
}
sub records { return grep { /\S/ } split(/\n/, qx('$real_iscsiadm' -m node 2>/dev/null)); }

# --- multipath 1, no CHAP: a node record and a login per portal, the map over them
my $sid = 'san';
my $scfg = { type => 'pvesan', api_url => $svc->{api_url}, ssl_verify_peer => 1, content => { images => 1 },
    shared => 1, multipath => 1 };
$P->on_add_hook($sid, $scfg, auth_token => $svc->{token});
my $vol = $P->alloc_image($sid, $scfg, 100, 'raw', undef, 16 * 1024);
is($vol, 'vm-100-disk-0', 'allocated');
my $info = volume_info('cluster1', 'vm-100-disk-0');
my ($iqn, $wwid) = ($info->{export}{iqn}, $info->{export}{wwid});
my @portals = @{ $info->{export}{portals} };
like($wwid, qr/^36[0-9a-f]{31}$/, "the service reports the LUN's WWID ($wwid)");

calls();
ok($P->activate_volume($sid, $scfg, $vol, undef, {}), 'activate_volume');
is_deeply([calls()], ['iscsiadm -m session', map {
    ("iscsiadm -m node -T $iqn -p $_ -o new", "iscsiadm -m node -T $iqn -p $_ --login")
} @portals], 'a node record and one login per portal');
is(scalar(records()), scalar(@portals), 'open-iscsi has the node records');
my $bypath = "$state/dev/disk/by-path/ip-$portals[0]-iscsi-$iqn-lun-1";
is(scalar $P->path($scfg, $vol, $sid), $bypath, 'before multipathd made the map: the by-path device');

ok($P->activate_volume($sid, $scfg, $vol, undef, {}), 'activate_volume again (live migration, a second disk)');
is_deeply([grep { /--login|-o new/ } calls()], [], 'no second login while the sessions are up');

symlink(readlink($bypath), "$state/dev/mapper/$wwid") or die;    # what multipathd does on the new paths
is(scalar $P->path($scfg, $vol, $sid), "$state/dev/mapper/$wwid", 'path: the multipath map, named by the WWID');
is_deeply($P->qemu_blockdev_options($scfg, $sid, $vol, undef, {}),
    { driver => 'host_device', filename => "$state/dev/mapper/$wwid" }, 'qemu_blockdev_options: the map');

$P->volume_resize($scfg, $sid, $vol, 32 * $MiB, 1);
is_deeply([calls()], ['iscsiadm -m session', (map { "iscsiadm -m node -T $iqn -p $_ -R" } @portals),
    "multipathd resize map $wwid"],
    'resize: every path rescanned, then the map');
is(0 + qx(blockdev --getsize64 '$bypath'), 32 * $MiB, 'the device has the new size');

ok($P->deactivate_volume($sid, $scfg, $vol, undef, {}), 'deactivate_volume');
is_deeply([calls()], ["multipath -f $wwid", map {
    ("iscsiadm -m node -T $iqn -p $_ --logout", "iscsiadm -m node -T $iqn -p $_ -o delete")
} @portals], 'the map flushed, then per portal a logout and the record deleted');
ok(!-e "$state/dev/mapper/$wwid" && !-e $bypath, 'no device left');
is(scalar(records()), 0, 'no node record left');
ok($P->deactivate_volume($sid, $scfg, $vol, undef, {}), 'deactivate_volume again: nothing to do, no error');
is_deeply([grep { !/--logout|-o delete/ } calls()], [], 'and only logouts and deletes tried (they fail quietly)');
$P->free_image($sid, $scfg, $vol, 0);
ok(!grep({ $_ eq $iqn } @{ $svc->targets() }), 'free_image: the export is gone');

# --- CHAP with mutual CHAP, multipath 0: the kernel initiator with the secrets in the record
my $chap_pw = 'chap-' . join('', map { ('a' .. 'z', 0 .. 9)[rand 36] } 1 .. 20);
my $mutual_pw = 'mutual-' . join('', map { ('a' .. 'z', 0 .. 9)[rand 36] } 1 .. 20);
$ENV{FAKE_TARGET_USER} = 'chapten-target';
$ENV{FAKE_TARGET_PASSWORD} = $mutual_pw;
# the tenant's ACL names this node (the volume_service role fills in the nodes' initiator names)
my $token = $svc->tenant_token('chapten', '--initiator', $NODE_IQN, '--chap-user', 'chapten-node',
    '--chap-password', $chap_pw, '--mutual-user', 'chapten-target', '--mutual-password', $mutual_pw);
my $csid = 'sanchap';
my $cscfg = { type => 'pvesan', api_url => $svc->{api_url}, ssl_verify_peer => 1, content => { images => 1 }, shared => 1 };
$P->on_add_hook($csid, $cscfg, auth_token => $token);
my $cvol = $P->alloc_image($csid, $cscfg, 200, 'raw', undef, 16 * 1024);
my $cinfo = volume_info('chapten', $cvol);
my $ciqn = $cinfo->{export}{iqn};
my $cportal = $cinfo->{export}{portals}[0];
is_deeply($cinfo->{export}{chap}, { user => 'chapten-node', password => $chap_pw,
    mutual => { user => 'chapten-target', password => $mutual_pw } }, 'the service exports the volume with CHAP');
my $cdev = "$state/dev/disk/by-path/ip-$cportal-iscsi-$ciqn-lun-1";

calls();
ok($P->activate_volume($csid, $cscfg, $cvol, undef, {}), 'activate_volume of a CHAP volume');
my @node = ("iscsiadm -m node -T $ciqn -p $cportal");
is_deeply([calls()], ['iscsiadm -m session', "@node -o new",
    "@node -o update -n node.session.auth.authmethod -v CHAP -n node.session.auth.username -v chapten-node "
        . '-n node.session.auth.username_in -v chapten-target',
    "@node -S", "@node --login"], 'record, CHAP names, the read-back, one login (multipath 0: one portal)');
my %rec = map { /^(node\.session\.auth\.\S+) = (.*)$/ ? ($1, $2) : () } split(/\n/, qx('$real_iscsiadm' -m node -T '$ciqn' -p '$cportal' -S));
is_deeply([@rec{map { "node.session.auth.$_" } qw(authmethod username password username_in password_in)}],
    ['CHAP', 'chapten-node', $chap_pw, 'chapten-target', $mutual_pw], 'open-iscsi parsed the CHAP of the record');
my ($recfile) = glob("/etc/iscsi/nodes/$ciqn/*");
is((stat($recfile))[2] & 07777, 0600, 'the record file is 0600');
ok(-b $cdev, 'the login made the device (the real tgtd accepted the record\'s secret)');
is(scalar $P->path($cscfg, $cvol, $csid), $cdev, 'path: the by-path device');
is_deeply($P->qemu_blockdev_options($cscfg, $csid, $cvol, undef, {}), { driver => 'host_device', filename => $cdev },
    'qemu_blockdev_options: a host_device, no user, no password-secret');

# data written through the kernel device is what the target serves (QEMU's libiscsi reads it)
system('dd', 'if=/dev/zero', 'bs=64k', 'count=16', 'status=none', "of=$cdev") == 0 or die;
system("printf 'written-by-the-kernel-path' | dd of='$cdev' bs=512 seek=8 conv=notrunc status=none") == 0 or die;
like(qio_chap($ciqn, 'read -v 4096 26'), qr/written.by.the.k/, 'QEMU reads over iSCSI what was written to the device');

# export and import through the kernel path (dd on the device)
section('export and import on the kernel path', sub {
    open(my $out, '>', "$state/export") or die;
    $P->volume_export($cscfg, $csid, $out, $cvol, 'raw+size', undef, undef, 0);
    close($out);
    is(-s "$state/export", 8 + 16 * $MiB, 'export: header and data');
    like(slurp("$state/export"), qr/written-by-the-kernel-path/, 'with the volume\'s data');
    open(my $in, '<', "$state/export") or die;
    my $new = $P->volume_import($cscfg, $csid, $in, 'vm-201-disk-0', 'raw+size', undef, undef, 0, 0);
    close($in);
    is($new, "$csid:vm-201-disk-0", 'import: a new volume');
    my $ninfo = volume_info('chapten', 'vm-201-disk-0');
    like(qio_chap($ninfo->{export}{iqn}, 'read -v 4096 26'), qr/written.by.the.k/, 'with the data');
    ok(!-e "$state/dev/disk/by-path/ip-$cportal-iscsi-$ninfo->{export}{iqn}-lun-1", 'and logged out after the import');
    $P->free_image($csid, $cscfg, 'vm-201-disk-0', 0);
});

# the secret was never on a command line or in a log line
ok(!grep({ index($_, $chap_pw) >= 0 || index($_, $mutual_pw) >= 0 } slurp("$state/calls"), @log),
    'no CHAP secret in any iscsiadm argument or log line');

ok($P->deactivate_volume($csid, $cscfg, $cvol, undef, {}), 'deactivate_volume');
ok(!-e "/etc/iscsi/nodes/$ciqn", 'the node record with the secrets is gone');

# rotation: the tenant's CHAP secret changes; the next login uses the new one
my $new_pw = 'rotated-' . join('', map { ('a' .. 'z', 0 .. 9)[rand 36] } 1 .. 20);
ok($svc->admin('tenant', 'update', 'chapten', '--chap-user', 'chapten-node', '--chap-password', $new_pw,
    '--mutual-user', 'chapten-target', '--mutual-password', $mutual_pw), 'the tenant\'s CHAP password rotated');
ok($P->activate_volume($csid, $cscfg, $cvol, undef, {}), 'activate_volume logs in with the new secret');
ok(-b $cdev, 'the target accepted it');
$P->deactivate_volume($csid, $cscfg, $cvol, undef, {});

# a wrong secret fails the login with open-iscsi's message, and nothing is left logged in
{
    local $ENV{FAKE_TARGET_PASSWORD} = 'not-the-target-secret';
    eval { $P->activate_volume($csid, $cscfg, $cvol, undef, {}) };
    like($@, qr/non-retryable iSCSI login failure/, 'a mutual CHAP mismatch fails the login with open-iscsi\'s reason');
    ok(index($@, $new_pw) < 0, 'and the message has no secret');
    is(scalar(records()), 0, 'and leaves no node record (with the secrets) behind');
}
$P->free_image($csid, $cscfg, $cvol, 0);
is(scalar(records()), 0, 'free_image: no node record left');
ok(!grep({ index($_, $svc->{token}) >= 0 || index($_, $token) >= 0 } @log), 'no token in any log line');
done_testing();

sub qio_chap {    # QEMU's libiscsi as this node, with the tenant's CHAP (test only: not the plugin's path)
    my ($iqn, $cmd) = @_;
    my $opts = join(',', 'driver=raw', 'file.driver=iscsi', 'file.transport=tcp', "file.portal=$cportal",
        "file.target=$iqn", 'file.lun=1', 'file.user=chapten-node', "file.password=$chap_pw",
        "file.initiator-name=$NODE_IQN");
    return scalar(qx(qemu-io -r --image-opts -c '$cmd' '$opts' 2>&1));
}

sub section {
    my ($name, $code) = @_;
    eval { $code->(); 1 } or fail("$name: died: $@");
}

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

sub spew {
    my ($path, $text) = @_;
    open(my $f, '>', $path) or die "$path: $!";
    print $f $text;
    close($f);
}

sub calls {    # the calls made since the last look
    my $file = "$state/calls";
    return () if !-e $file;
    my @lines = map { chomp; $_ } split(/^/m, slurp($file));
    unlink($file);
    return @lines;
}
