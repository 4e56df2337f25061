# Dev-time check (scripts/proxmox-check.sh facts): what Proxmox's own code says, dumped as JSON
# for `make test` (tests/unit/plugins/module_utils/fixtures/proxmox/pve-<version>.json).
#
# Runs with the REAL pve-storage, pve-common and pve-cluster on @INC (see the script) inside a
# private mount namespace where /etc/pve is a plain directory. Nothing here re-implements
# Proxmox: every value is read from the loaded modules or produced by running their code:
#   schema        every storage type's properties, options (optional/fixed), content, formats,
#                 sensitive properties, shared flag; from PVE::Storage::Plugin->private()
#   api           APIVER, APIAGE, the known export formats
#   blockdev      $allowed_qemu_blockdev_options of PVE/Storage.pm (a file lexical, read with
#                 PadWalker from the closure of PVE::Storage::qemu_blockdev_options)
#   parse_cases   storage.cfg texts (tests/proxmox/parse-cases.json) run through the real
#                 PVE::Storage::Plugin->parse_config and write_config: the parsed sections, the
#                 warnings Proxmox printed, and the text it writes back
#   pbs_master_pubkey  what PBSPlugin->on_add_hook does with a master-pubkey
#   cfs_lock      what a process waiting for a cfs lock does to the lock directory
#   pvesan        our plugin as the real loader registered it (or the loader's warning)

use strict;
use warnings;

use JSON;
use MIME::Base64;
use PadWalker qw(closed_over);
use POSIX ();
use Time::HiRes qw(sleep);

my ($cases_file) = @ARGV;
die "usage: facts.pl <parse-cases.json>\n" if !$cases_file;

# Warnings of the plugin loader (it runs inside `use PVE::Storage`).
my @load_warnings;
BEGIN { $SIG{__WARN__} = sub { push @load_warnings, $_[0]; }; }
use PVE::Storage;
use PVE::Storage::Plugin;
use PVE::Cluster;
BEGIN { $SIG{__WARN__} = 'DEFAULT'; }

sub plain {
    # a schema as data: code references (completion, verifiers) become their kind
    my ($v) = @_;
    return 'CODE' if ref($v) eq 'CODE';
    return { map { $_ => plain($v->{$_}) } keys %$v } if ref($v) eq 'HASH';
    return [map { plain($_) } @$v] if ref($v) eq 'ARRAY';
    return $v;
}

sub read_version {
    my ($dir) = @_;
    open(my $fh, '<', "$dir/debian/changelog") or return undef;
    my $line = <$fh>;
    my ($version) = $line =~ /\(([^)]+)\)/;
    return $version;
}

my $facts = { sources => {} };
for my $src (split(/:/, $ENV{PVE_SOURCE_DIRS} // '')) {
    my ($name) = $src =~ m!([^/]+?)(?:-[0-9][^/]*)?$!;
    my $commit;
    if (open(my $fh, '<', "$src/.commit")) { $commit = <$fh>; close($fh); }
    chomp $commit if defined $commit;
    $facts->{sources}->{$name} = { version => read_version($src), commit => $commit };
}

$facts->{api} = {
    APIVER => 0 + PVE::Storage::APIVER(),
    APIAGE => 0 + PVE::Storage::APIAGE(),
    known_export_formats => $PVE::Storage::KNOWN_EXPORT_FORMATS,
};

# --- the storage schema
my $pdata = PVE::Storage::Plugin->private();
my $types = {};
my %custom_props;    # declared by custom plugins (ours): kept out of Proxmox's own schema
for my $type (sort keys %{ $pdata->{plugins} }) {
    my $plugin = $pdata->{plugins}->{$type};
    if ($plugin =~ /^PVE::Storage::Custom::/) {
        $custom_props{$_} = 1 for keys %{ $plugin->properties() };
        next;
    }
    my $pd = $pdata->{plugindata}->{$type} // {};
    my $opts = $pdata->{options}->{$type};
    $types->{$type} = {
        plugin => $plugin,
        options => { map { $_ => plain($opts->{$_}) } keys %$opts },
        content => $pd->{content} ? [[sort keys %{ $pd->{content}->[0] }], [sort keys %{ $pd->{content}->[1] }]] : undef,
        format => $pd->{format} ? [[sort keys %{ $pd->{format}->[0] }], $pd->{format}->[1]] : undef,
        'sensitive-properties' => PVE::Storage::Plugin::sensitive_properties($type),
        shared => (grep({ $_ eq $type } @PVE::Storage::Plugin::SHARED_STORAGE) ? JSON::true : JSON::false),
        features => plain($pd->{features}),
    };
}
my $props = {};
for my $p (sort keys %{ $pdata->{propertyList} }) {
    next if $custom_props{$p};
    my $schema = plain($pdata->{propertyList}->{$p});
    delete $schema->{description};
    delete $schema->{verbose_description};
    if (ref($schema->{format}) eq 'HASH') {
        delete $_->{description} for values %{ $schema->{format} };
    }
    $props->{$p} = $schema;
}
$facts->{schema} = { types => $types, properties => $props };

# --- the -blockdev options PVE lets through
my $closure = closed_over(\&PVE::Storage::qemu_blockdev_options);
my $allowed = $closure->{'$allowed_qemu_blockdev_options'};
$facts->{blockdev} = $allowed ? { allowed => plain($$allowed) } : { missing => 'no qemu_blockdev_options in this version' };

# --- storage.cfg texts through the real parser and writer
open(my $cfh, '<', $cases_file) or die "$cases_file: $!\n";
my $cases = decode_json(do { local $/; <$cfh> });
my @results;
for my $case (@$cases) {
    my @warn;
    local $SIG{__WARN__} = sub { push @warn, $_[0]; };
    my $res = { name => $case->{name}, text => $case->{text} };
    my $cfg = eval { PVE::Storage::Plugin->parse_config('/etc/pve/storage.cfg', $case->{text}) };
    if (my $err = $@) {
        $res->{parse_error} = "$err";
    } else {
        my $ids = {};
        for my $id (keys %{ $cfg->{ids} }) {
            my $d = $cfg->{ids}->{$id};
            $ids->{$id} = defined($d) ? plain($d) : undef;
        }
        delete $_->{priority} for grep { ref } values %$ids;
        $res->{ids} = $ids;
        $res->{order} = [sort { $cfg->{order}->{$a} <=> $cfg->{order}->{$b} } grep { defined $cfg->{order}->{$_} } keys %{ $cfg->{order} }];
        my $written = eval { PVE::Storage::Plugin->write_config('/etc/pve/storage.cfg', $cfg) };
        $res->{write_error} = "$@" if $@;
        $res->{written} = $written if defined $written;
    }
    for (@warn) {    # Perl's own location suffix: machine specific
        s/ at \S+ line \d+(?:, <[^>]+> line \d+)?\.\n/\n/;
        s!\Q$ENV{PVE_SOURCES_ROOT}\E/!!g if $ENV{PVE_SOURCES_ROOT};
    }
    $res->{warnings} = \@warn;
    push @results, $res;
}
$facts->{parse_cases} = \@results;

# --- PBS master-pubkey: what the real on_add_hook writes
{
    my $pem = "-----BEGIN PUBLIC KEY-----\nMFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf\n9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END PUBLIC KEY-----\n";
    my $scfg = { type => 'pbs', server => 'pbs.example', datastore => 'store1' };
    my $key = encode_json({ kdf => undef, created => '2026-01-01T00:00:00Z', modified => '2026-01-01T00:00:00Z',
        data => 'AAAA', fingerprint => 'aa:bb' });
    my $plugin = PVE::Storage::Plugin->lookup('pbs');
    eval { $plugin->on_add_hook('pbs1', $scfg, 'encryption-key' => $key, 'master-pubkey' => encode_base64($pem, '')) };
    my $file = '/etc/pve/priv/storage/pbs1.master.pem';
    $facts->{pbs_master_pubkey} = {
        given => 'master-pubkey <base64 of a PEM public key>, with encryption-key',
        error => ($@ ? "$@" : undef),
        scfg_master_pubkey => $scfg->{'master-pubkey'},
        scfg_encryption_key => $scfg->{'encryption-key'},
        file => (-e $file ? $file : undef),
        file_is_decoded_pem_plus_newline => (-e $file && do { local (@ARGV, $/) = ($file); <> } eq "$pem\n")
            ? JSON::true : JSON::false,
        without_encryption_key => do {
            my $s = { type => 'pbs', server => 'x', datastore => 'y' };
            eval { $plugin->on_add_hook('pbs2', $s, 'master-pubkey' => encode_base64($pem, '')) };
            "$@";
        },
    };
    $plugin->on_delete_hook('pbs1', $scfg);
}

# --- cfs lock: a waiting process sends "unlock requests" by utime(0, 0) on the lock directory
{
    my $lockdir = '/etc/pve/priv/lock/file-storage_cfg';
    mkdir '/etc/pve/priv/lock';
    mkdir $lockdir or die "mkdir $lockdir: $!\n";    # held by "someone else"
    my $before = (stat($lockdir))[9];
    my $pid = fork() // die "fork: $!";
    if (!$pid) {
        PVE::Cluster::cfs_lock_file('storage.cfg', 3, sub { return 1; });
        print STDERR "child: $@" if $@;
        POSIX::_exit($@ ? 1 : 0);
    }
    my @mtimes;
    for (1 .. 12) { sleep(0.25); push @mtimes, (stat($lockdir))[9]; }
    waitpid($pid, 0);
    my $rc = $? >> 8;
    $facts->{cfs_lock} = {
        lock => 'priv/lock/file-storage_cfg (mkdir)',
        mtime_before => ($before > 0 ? 'creation time' : $before),
        mtimes_seen_while_waiting => [map { $_ == 0 ? 0 : 'not 0' } @mtimes],
        waiter_gave_up_with_error => ($rc ? JSON::true : JSON::false),
        lock_left_in_place => (-d $lockdir ? JSON::true : JSON::false),
    };
    rmdir $lockdir;
}

# --- our plugin as the real loader saw it
$facts->{pvesan} = {
    loaded => (exists $pdata->{plugins}->{pvesan} ? JSON::true : JSON::false),
    api => eval { PVE::Storage::Custom::PVESANPlugin->api() },
    options => plain($pdata->{options}->{pvesan}),
    shared => (grep({ $_ eq 'pvesan' } @PVE::Storage::Plugin::SHARED_STORAGE) ? JSON::true : JSON::false),
    loader_warnings => [grep { /PVESAN|pvesan/i } @load_warnings],
} if exists $pdata->{plugins}->{pvesan} || grep { /PVESAN/i } @load_warnings;
$facts->{load_warnings} = \@load_warnings;

print JSON->new->canonical->pretty->encode($facts);
