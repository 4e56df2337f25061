# The plugin's declarations against the test double of pve-storage (tests/perl/lib) and the
# facts recorded from Proxmox's own code: API version negotiation, properties, shared flag,
# volume names, token hooks, volume_resize of a snapshot. No service needed.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib", "$FindBin::Bin/../../roles/pve_host/files";
use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;

use PVE::Storage;    # loaded before custom plugins, as in pve-storage
no warnings 'once';    # package variables of the plugin and the test double
require_ok('PVESANPlugin.pm');
my $P = 'PVE::Storage::Custom::PVESANPlugin';
isa_ok($P, 'PVE::Storage::Plugin');

# What Proxmox's own code says (scripts/proxmox-check.sh facts, pve-storage 9.1.7 and 8.3.8/PVE 8.4).
my $FIXTURES = "$FindBin::Bin/../unit/plugins/module_utils/fixtures/proxmox";
my %facts = map {
    open(my $fh, '<', "$FIXTURES/pve-$_.json") or die "$FIXTURES/pve-$_.json: $!";
    local $/;
    ($_ => decode_json(<$fh>));
} qw(9.1 8.4);

# --- API version negotiation. The real loader (PVE/Storage.pm) refuses api() outside
# APIVER-APIAGE..APIVER and warns "implementing an older storage API" for anything but APIVER.
for my $rel (sort keys %facts) {
    my ($ver, $age) = @{ $facts{$rel}->{api} }{qw(APIVER APIAGE)};
    local $PVE::Storage::TEST_APIVER = $ver;
    local $PVE::Storage::TEST_APIAGE = $age;
    is($P->api(), $ver, "PVE $rel (pve-storage $facts{$rel}{sources}{'pve-storage'}{version}, APIVER $ver/APIAGE $age): "
        . "api() answers APIVER, so the loader does not warn");
}
for my $case ([12, 3, 12], [13, 4, 13], [16, 3, 15], [17, 1, 10], [9, 0, 10]) {
    my ($ver, $age, $want) = @$case;
    local $PVE::Storage::TEST_APIVER = $ver;
    local $PVE::Storage::TEST_APIAGE = $age;
    is($P->api(), $want, "APIVER $ver/APIAGE $age -> api() $want");
    my $got = $P->api();
    ok($got <= $ver && $got >= $ver - $age, "PVE $ver/$age accepts $got") if $want != 10;
}

# --- declarations
is($P->type(), 'pvesan', 'type');
my $pd = $P->plugindata();
is_deeply($pd->{'sensitive-properties'}, { auth_token => 1 }, 'auth_token is a sensitive property');
ok($pd->{content}->[0]->{images} && $pd->{content}->[1]->{images}, 'images content, default images');
is_deeply($pd->{format}, [{ raw => 1 }, 'raw'], 'raw only');

my $props = $P->properties();
is_deeply([sort keys %$props],
    [qw(api_url auth_token multipath query_exclude query_include service_type ssl_verify_peer transport_encryption)],
    'the driver options of the guide');
# Property names are one namespace for all plugins: a name a built-in plugin defines makes
# SectionConfig die ("duplicate property") and no storage loads. Options may only name defined
# properties ("undefined property"). Both against every release's real property list.
for my $rel (sort keys %facts) {
    my $builtin = $facts{$rel}->{schema}->{properties};
    ok(!exists $builtin->{$_}, "PVE $rel: property '$_' does not collide with a built-in one") for sort keys %$props;
    for my $o (sort keys %{ $P->options() }) {
        ok(exists $props->{$o} || exists $builtin->{$o}, "PVE $rel: option '$o' names a defined property");
    }
}
my $opts = $P->options();
ok($opts->{api_url}->{fixed}, 'api_url is fixed after creation');
ok($opts->{$_}->{optional}, "$_ optional") for qw(auth_token ssl_verify_peer multipath transport_encryption nodes shared disable content);

# --- shared without `shared 1`: PVE::Storage::Plugin::parse_config marks @SHARED_STORAGE types
my $ids = PVE::Storage::Plugin::apply_shared_flag({
    san => { type => 'pvesan', api_url => 'https://x' },
    loc => { type => 'dir', path => '/var/lib/vz' },
});
is($ids->{san}->{shared}, 1, 'a pvesan storage is shared without shared 1');
ok(!$ids->{loc}->{shared}, 'a dir storage is not');
is(scalar(grep { $_ eq 'pvesan' } @PVE::Storage::Plugin::SHARED_STORAGE), 1, 'listed once');

# --- volume names (Proxmox naming; linked clones carry their base)
is_deeply([$P->parse_volname('vm-100-disk-0')], ['images', 'vm-100-disk-0', 100, undef, undef, '', 'raw'], 'vm disk');
is_deeply([$P->parse_volname('base-100-disk-1')], ['images', 'base-100-disk-1', 100, undef, undef, 1, 'raw'], 'base disk');
is_deeply([$P->parse_volname('base-100-disk-1/vm-101-disk-0')],
    ['images', 'vm-101-disk-0', 101, 'base-100-disk-1', 100, '', 'raw'], 'linked clone');
is(($P->parse_volname('vm-100-state-snap1'))[1], 'vm-100-state-snap1', 'vm state volume');
for my $bad ('disk-0', 'vm-abc-disk-0', '100/vm-100-disk-0.raw', 'vm-100-disk-0; rm -rf /', 'VM-100-disk-0') {
    eval { $P->parse_volname($bad) };
    like($@, qr/unable to parse pvesan volume name/, "rejects '$bad'");
}

# --- features
ok($P->volume_has_feature({}, 'snapshot', 's', 'vm-100-disk-0'), 'snapshot current');
ok($P->volume_has_feature({}, 'clone', 's', 'base-100-disk-0'), 'clone from base');
ok(!$P->volume_has_feature({}, 'clone', 's', 'vm-100-disk-0'), 'no linked clone of a non-template');
ok($P->volume_has_feature({}, 'template', 's', 'vm-100-disk-0'), 'template');
ok(!$P->volume_has_feature({}, 'copy', 's', 'vm-100-disk-0', 'snap1'), 'no copy from a snapshot (not mappable)');
ok($P->volume_has_feature({}, 'rename', 's', 'vm-100-disk-0'), 'rename');

# --- token hooks: kept in priv/storage/<id>.pw (0600), never in storage.cfg
my $priv = tempdir(CLEANUP => 1);
local $PVE::Storage::Custom::PVESANPlugin::PRIV_DIR = "$priv/storage";
my @log;
local $PVE::Storage::Custom::PVESANPlugin::LOGGER = sub { push @log, @_ };
my $secret = 'pvs_abc_SECRETSECRETSECRET';
$P->on_add_hook('san1', { type => 'pvesan' }, auth_token => $secret);
my $file = "$priv/storage/san1.pw";
ok(-f $file, 'token file written');
is((stat($file))[2] & 07777, 0600, 'token file is 0600');
is(do { local (@ARGV, $/) = ($file); <> }, "$secret\n", 'token file content');
$P->on_update_hook('san1', { type => 'pvesan' }, auth_token => "${secret}2");
is(do { local (@ARGV, $/) = ($file); <> }, "${secret}2\n", 'token replaced on update');
$P->on_update_hook('san1', { type => 'pvesan' }, content => 'images');
ok(-f $file, 'token kept when not part of the update');
$P->on_update_hook('san1', { type => 'pvesan' }, auth_token => undef);
ok(!-e $file, 'token removed when deleted in the update');
$P->on_add_hook('san1', { type => 'pvesan' }, auth_token => $secret);
$P->on_delete_hook('san1', { type => 'pvesan' });
ok(!-e $file, 'token removed with the storage');
ok(scalar(grep { /^pvesan: on_add_hook\(/ } @log), 'hook calls are logged with the pvesan: tag');
ok(!grep({ /SECRET/ } @log), 'the token never appears in the log') or diag explain \@log;

# --- missing token: the error says how to fix it
eval { PVE::Storage::Custom::PVESANPlugin::_read_token('nosuch') };
like($@, qr/pvesm set nosuch --auth_token/, 'missing token error tells how to set it');

# --- transport_encryption tls: portals become the node's stunnel endpoints
# (/etc/pvesan/tls-endpoints.json as roles/transport_encryption/README.md documents it)
{
    my $dir = tempdir(CLEANUP => 1);
    open(my $fh, '>', "$dir/tls.json") or die;
    print $fh '{"endpoints": {"10.89.1.10:3260": "127.0.0.1:13260", "10.89.2.10:3260": "127.0.0.1:13261"}, "mode": "tls", "version": 1}';
    close($fh);
    local $PVE::Storage::Custom::PVESANPlugin::TLS_ENDPOINTS = "$dir/tls.json";
    my $vol = { name => 'vm-1-disk-0', export => { iqn => 'iqn.x:y', lun => 1, portals => ['10.89.1.10:3260', '10.89.2.10:3260'] } };
    is(PVE::Storage::Custom::PVESANPlugin::_iscsi_url({ transport_encryption => 'tls' }, $vol),
        'iscsi://127.0.0.1:13260/iqn.x:y/1', 'tls: the URL goes through the local stunnel endpoint');
    is(PVE::Storage::Custom::PVESANPlugin::_iscsi_url({ transport_encryption => 'none' }, $vol),
        'iscsi://10.89.1.10:3260/iqn.x:y/1', 'none: the portal itself');
    is_deeply([PVE::Storage::Custom::PVESANPlugin::_portals({ transport_encryption => 'tls', multipath => 1 }, $vol)],
        ['127.0.0.1:13260', '127.0.0.1:13261'], 'tls + multipath: every portal mapped');
    local $PVE::Storage::Custom::PVESANPlugin::TLS_ENDPOINTS = "$dir/missing.json";
    eval { PVE::Storage::Custom::PVESANPlugin::_iscsi_url({ transport_encryption => 'tls' }, $vol) };
    like($@, qr/run the transport_encryption role/, 'tls without the endpoints file says what to do');
}

# --- CHAP values open-iscsi cannot keep are refused before anything is written or run
{
    my $dir = tempdir(CLEANUP => 1);
    open(my $fh, '>', "$dir/iscsiadm") or die;
    print $fh "#!/bin/sh\necho \"\$@\" >>$dir/called\nexit 1\n";
    close($fh);
    chmod(0755, "$dir/iscsiadm");
    local $ENV{PATH} = "$dir:$ENV{PATH}";
    for my $bad (' leading-blank-secret', 'trailing-blank-secret ', "two\nlines-of-secret") {
        eval { PVE::Storage::Custom::PVESANPlugin::_set_node_chap('iqn.x:y', '10.0.0.1:3260', { user => 'u', password => $bad }) };
        like($@, qr/one line without leading or trailing blanks/, 'a CHAP secret open-iscsi would change is refused');
        unlike($@, qr/\Q$bad\E/, 'without the secret in the message');
    }
    ok(!-e "$dir/called", 'and iscsiadm was never run');
}

done_testing();
