package PVE::Storage::Custom::PVESANPlugin;

# Proxmox VE storage plugin for pvesan-service (collection pvesan.storage, role pve_host).
#
# Thin by design: every storage operation is one call of the `pvesan` CLI with `--json`; the
# service owns all state. The API token is passed to the CLI in the environment, never on the
# command line, and is read from /etc/pve/priv/storage/<id>.pw, never from storage.cfg.
#
# Data path, per volume (docs/guide.md, "Data path"):
#   QEMU's libiscsi      - a volume without CHAP on a storage with multipath 0 (the default
#                          before CHAP became the tenant default): `path` is
#                          iscsi://<portal>/<iqn>/<lun>, `qemu_blockdev_options` the `iscsi`
#                          driver with the node's initiator name. No host state, one portal.
#   the kernel initiator - every volume whose export has CHAP, and every volume of a storage
#                          with multipath 1: activate_volume writes open-iscsi node records
#                          (CHAP secrets into the record file, never on a command line) and
#                          logs in; `path` is the dm-multipath map (multipath 1) or the by-path
#                          device, QEMU gets a `host_device`. Proxmox VE 9 cannot hand CHAP to
#                          QEMU's iscsi driver (`user`/`password-secret` are not in pve-storage's
#                          $allowed_qemu_blockdev_options), so CHAP always takes this path.
# With transport_encryption tls, portals are replaced by the local stunnel endpoints listed in
# /etc/pvesan/tls-endpoints.json (role transport_encryption).
#
# Debugging: every call is logged to syslog (LOG_INFO) as "pvesan: <method> <args>", secrets
# removed:  journalctl -f | grep pvesan:

use strict;
use warnings;

use Digest::SHA qw(sha256_hex);
use Fcntl qw(O_WRONLY O_CREAT O_EXCL);
use File::Path qw(make_path);
use IPC::Open3 qw(open3);
use JSON::PP;
use POSIX ();
use Symbol qw(gensym);
use Sys::Syslog qw(openlog syslog);
use Time::HiRes ();
use Time::Local qw(timegm);

use PVE::Storage::Plugin;

use base qw(PVE::Storage::Plugin);

our $VERSION = '1.1.0';

# Overridable by tests (and by admins who install the CLI elsewhere).
our $PVESAN_CLI = $ENV{PVESAN_CLI} // '/usr/local/bin/pvesan';
our $PRIV_DIR = '/etc/pve/priv/storage';
our $TLS_ENDPOINTS = '/etc/pvesan/tls-endpoints.json';
our $DEV_DIR = '/dev';    # udev's device links (by-path, dm-multipath maps) are below it
our $ISCSI_NODES_DIR = '/etc/iscsi/nodes';    # open-iscsi's node records
our $INITIATOR_NAME_FILE = '/etc/iscsi/initiatorname.iscsi';
our $STATUS_CACHE_DIR = '/run/pvesan';
our $STATUS_TTL = 5;      # seconds; pvestatd asks every 10 s, so each of its runs gets fresh numbers
our $CLI_TIMEOUT = 45;    # cluster storage lock work is killed after 60 s
# Seconds the CLI keeps retrying an API it cannot reach: a storage HA pair's API moves to the other
# head within this (docs/performance.md, "Storage HA"). Not for `status`: pvestatd asks every 10 s
# and must not wait on one storage; a miss there only greys the storage out for a moment.
our $CLI_RETRY_FOR = 30;
our $LOGGER = sub { my ($msg) = @_; openlog('pvesan', 'pid', 'daemon'); syslog('info', '%s', $msg); };

# Keys whose values never reach a log line.
my %SECRET_KEY = map { $_ => 1 } qw(auth_token token password secret chap_password mutual_password);

# ---------------------------------------------------------------------------------------------
# API version negotiation (pve-storage PVE/Storage.pm: APIVER, APIAGE; ApiChangeLog).
# Implemented: 10 .. 15 (PVE 7.1 .. 9.1): qemu_blockdev_options with snapshot-name, rename_snapshot
# and volume_qemu_snapshot_method (12), $hints (13), get_identity (14), $snapname in
# volume_resize and volume_snapshot_info (15). Newer versions accept us while
# APIVER - APIAGE <= $TESTED_APIVER, so we answer $TESTED_APIVER there.
my $MIN_APIVER = 10;
my $TESTED_APIVER = 15;

sub api {
    my $apiver = eval { PVE::Storage::APIVER() } // $TESTED_APIVER;
    my $apiage = eval { PVE::Storage::APIAGE() } // 0;
    return $MIN_APIVER if $apiver < $MIN_APIVER;    # too old: PVE refuses to load us and says why
    return $apiver if $apiver <= $TESTED_APIVER;
    return $TESTED_APIVER if $apiver - $apiage <= $TESTED_APIVER;
    return $MIN_APIVER;    # far newer, beyond its compatibility window: refused, with the reason
}

# A shared storage: PVE marks the types in @SHARED_STORAGE as shared in parse_config (and
# overrides `shared 0`), so the admin needs no `shared 1`. The list is a package variable of
# PVE::Storage::Plugin; joining it is how other custom plugins do the same.
push @PVE::Storage::Plugin::SHARED_STORAGE, 'pvesan'
    if !grep { $_ eq 'pvesan' } @PVE::Storage::Plugin::SHARED_STORAGE;

sub type { return 'pvesan'; }

# The declarations below are the one description of the `pvesan` type: the collection's
# pve_storage module reads the same (tests/unit/plugins/module_utils/test_pve_storage_schema.py
# compares them with plugins/module_utils/_pve_storage_schema.py).
sub plugindata {
    return {
        content => [{ images => 1, rootdir => 1, none => 1 }, { images => 1 }],
        format => [{ raw => 1 }, 'raw'],
        'sensitive-properties' => { auth_token => 1 },
    };
}

# Property names are global across all plugins: none of these exists in pve-storage.
sub properties {
    return {
        api_url => {
            description => 'URL of the pvesan-service API, e.g. https://storage1:8443.',
            type => 'string',
        },
        auth_token => {
            description => 'pvesan API token of this cluster (kept in /etc/pve/priv/storage/<id>.pw).',
            type => 'string',
        },
        ssl_verify_peer => {
            description => 'Verify the certificate of the API server.',
            type => 'boolean',
            default => 1,
        },
        service_type => {
            description => 'Service type (provisioning template) for new volumes.',
            type => 'string',
        },
        query_include => {
            description => 'Comma-separated tags a pool must have to receive new volumes.',
            type => 'string',
        },
        query_exclude => {
            description => 'Comma-separated tags a pool must not have to receive new volumes.',
            type => 'string',
        },
        transport_encryption => {
            description => 'Encryption of the iSCSI data path.',
            type => 'string',
            enum => ['tls', 'ipsec', 'none'],
            default => 'none',
        },
        multipath => {
            description => 'Log in with open-iscsi to every portal and use dm-multipath devices.',
            type => 'boolean',
            default => 0,
        },
    };
}

sub options {
    return {
        api_url => { fixed => 1 },
        auth_token => { optional => 1 },
        ssl_verify_peer => { optional => 1 },
        service_type => { optional => 1 },
        query_include => { optional => 1 },
        query_exclude => { optional => 1 },
        transport_encryption => { optional => 1 },
        multipath => { optional => 1 },
        nodes => { optional => 1 },
        shared => { optional => 1 },
        disable => { optional => 1 },
        content => { optional => 1 },
        bwlimit => { optional => 1 },
    };
}

# ---------------------------------------------------------------------------------------------
# Helpers

sub _redact {
    my ($value) = @_;
    return 'undef' if !defined($value);
    if (ref($value) eq 'HASH') {
        return '{' . join(', ', map {
            "$_=" . ($SECRET_KEY{$_} ? '***' : _redact($value->{$_}))
        } sort keys %$value) . '}';
    }
    return '[' . join(', ', map { _redact($_) } @$value) . ']' if ref($value) eq 'ARRAY';
    return "$value";
}

sub _log_call {
    my ($method, @args) = @_;
    # The class name and $scfg (a hash with everything but the token) are noise; keep the rest.
    my @shown = map { _redact($_) } grep { !(ref($_) eq 'HASH' && exists $_->{type}) } @args;
    eval { $LOGGER->("pvesan: $method(" . join(', ', @shown) . ')') };
}

sub _token_file {
    my ($storeid) = @_;
    return "$PRIV_DIR/$storeid.pw";
}

sub _read_token {
    my ($storeid) = @_;
    my $file = _token_file($storeid);
    open(my $fh, '<', $file)
        or die "pvesan storage '$storeid': cannot read the API token from $file ($!); "
        . "set it with 'pvesm set $storeid --auth_token <token>'\n";
    my $token = <$fh> // '';
    close($fh);
    chomp $token;
    die "pvesan storage '$storeid': $file is empty\n" if $token eq '';
    return $token;
}

# Write a file atomically (temp file + rename) with mode 0600.
sub _write_private {
    my ($file, $content) = @_;
    my $tmp = "$file.tmp.$$";
    unlink($tmp);
    sysopen(my $fh, $tmp, O_WRONLY | O_CREAT | O_EXCL, 0600) or die "cannot write $tmp: $!\n";
    print $fh $content;
    close($fh) or do { unlink($tmp); die "cannot write $tmp: $!\n"; };
    rename($tmp, $file) or do { unlink($tmp); die "cannot rename $tmp to $file: $!\n"; };
}

sub _write_token {
    my ($storeid, $token) = @_;
    make_path($PRIV_DIR, { mode => 0700 }) if !-d $PRIV_DIR;
    _write_private(_token_file($storeid), "$token\n");
}

sub _delete_token {
    my ($storeid) = @_;
    unlink _token_file($storeid);
}

# Run `pvesan --json <args>` for a storage and return the decoded JSON (undef for no output).
sub _cli {
    my ($storeid, $scfg, @args) = @_;

    local $ENV{PVESAN_API_URL} = $scfg->{api_url};
    local $ENV{PVESAN_TOKEN} = _read_token($storeid);
    local $ENV{PVESAN_SSL_VERIFY} = (!defined($scfg->{ssl_verify_peer}) || $scfg->{ssl_verify_peer}) ? '1' : '0';
    local $ENV{PVESAN_CONFIG} = '/dev/null';    # only this storage's settings apply
    local $ENV{PVESAN_RETRY_FOR} = ($args[0] // '') eq 'status' ? 0 : $CLI_RETRY_FOR;

    my @cmd = ($PVESAN_CLI, '--json', @args);
    _log_call('exec', join(' ', @cmd));

    my ($out, $err) = ('', '');
    my $pid;
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm($CLI_TIMEOUT);
        my $errfh = gensym;
        $pid = open3(my $in, my $outfh, $errfh, @cmd);
        close($in);
        # stderr is small (one error line); read stdout first, then stderr
        local $/;
        $out = <$outfh> // '';
        $err = <$errfh> // '';
        waitpid($pid, 0);
        alarm(0);
    };
    my $failure = $@;
    alarm(0);
    if ($failure) {
        kill('KILL', $pid) if $pid;
        waitpid($pid, 0) if $pid;
        die "pvesan storage '$storeid': 'pvesan @args' did not finish within ${CLI_TIMEOUT}s\n"
            if $failure eq "timeout\n";
        die "pvesan storage '$storeid': cannot run $PVESAN_CLI: $failure";
    }
    my $rc = $? >> 8;
    my $data;
    $data = eval { decode_json($out) } if $out =~ /\S/;
    if ($rc != 0) {
        # --json errors: {"error": {"status": N, "message": "..."}} (docs/service.md)
        my $msg = (ref($data) eq 'HASH' && ref($data->{error}) eq 'HASH' && $data->{error}->{message})
            || $err || $out || "exit code $rc";
        chomp $msg;
        my $e = "pvesan storage '$storeid': pvesan @args: $msg\n";
        die $rc == 3 ? PVE::Storage::Custom::PVESANPlugin::NotFound->new($e) : $e;
    }
    die "pvesan storage '$storeid': pvesan @args: output is not JSON: $out\n" if $out =~ /\S/ && !defined($data);
    return $data;
}

# The CLI returns either a list or {"items": [...]}/{"volumes": [...]} for list commands.
sub _items {
    my ($data, $key) = @_;
    return $data if ref($data) eq 'ARRAY';
    return $data->{$key} // $data->{items} // [] if ref($data) eq 'HASH';
    return [];
}

# Pool selection options of this storage, for volume create and status.
sub _placement {
    my ($scfg) = @_;
    my @opts;
    push @opts, '--service-type', $scfg->{service_type} if $scfg->{service_type};
    push @opts, '--include', $scfg->{query_include} if $scfg->{query_include};
    push @opts, '--exclude', $scfg->{query_exclude} if $scfg->{query_exclude};
    return @opts;
}

# `pvesan status` of a storage, shared by every process on the node for $STATUS_TTL seconds
# (pvestatd, the API daemons and every pvesm/qm run call activate_storage and status; one call
# serves them all). Failures are remembered as well, so a down service is not asked by every
# caller. The cache key covers every input of the call (URL, verification and CA, placement,
# token): a changed setting is a miss.
our %STATUS_MEMO;    # this process's copy

sub _status {
    my ($storeid, $scfg) = @_;
    my $key = sha256_hex(join("\0", $scfg->{api_url} // '', $scfg->{ssl_verify_peer} // 1,
        $ENV{PVESAN_CA} // '', _placement($scfg), _read_token($storeid)));
    my $now = Time::HiRes::time();
    my $file = "$STATUS_CACHE_DIR/status-$storeid.json";
    my $entry = $STATUS_MEMO{$storeid};
    if (!$entry || $entry->{key} ne $key || $now - $entry->{time} >= $STATUS_TTL) {
        $entry = eval {
            open(my $fh, '<', $file) or die;
            local $/;
            decode_json(<$fh>);
        };
    }
    if (!$entry || ($entry->{key} // '') ne $key || $now - $entry->{time} >= $STATUS_TTL || $entry->{time} > $now) {
        my $st = eval { _cli($storeid, $scfg, 'status', _placement($scfg)) };
        my $err = $@;
        $entry = { key => $key, time => $now, ($err ? (error => "$err") : (status => $st)) };
        eval {
            make_path($STATUS_CACHE_DIR, { mode => 0700 }) if !-d $STATUS_CACHE_DIR;
            _write_private($file, encode_json($entry));
        };    # not writable (e.g. not root): this process still keeps it
    }
    $STATUS_MEMO{$storeid} = $entry;
    die $entry->{error} if defined($entry->{error});
    return $entry->{status};
}

sub _volume_show {
    my ($storeid, $scfg, $name) = @_;
    return _cli($storeid, $scfg, 'volume', 'show', $name);
}

sub _volume_exists {
    my ($storeid, $scfg, $name) = @_;
    my $vols = _items(_cli($storeid, $scfg, 'volume', 'list', '--prefix', $name), 'volumes');
    return scalar(grep { $_->{name} eq $name } @$vols);
}

# Service volume name of a Proxmox volname: linked clones are "base-100-disk-0/vm-101-disk-0".
sub _service_name {
    my ($class, $volname) = @_;
    my (undef, $name) = $class->parse_volname($volname);
    return $name;
}

# ISO 8601 UTC (the service's timestamps) -> seconds since the epoch.
sub _epoch {
    my ($iso) = @_;
    return undef if !defined($iso);
    my ($y, $m, $d, $H, $M, $S) = $iso =~ /^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)/ or return undef;
    return timegm($S, $M, $H, $d, $m - 1, $y);
}

sub _tls_endpoints {
    my ($scfg) = @_;
    return {} if ($scfg->{transport_encryption} // 'none') ne 'tls';
    open(my $fh, '<', $TLS_ENDPOINTS)
        or die "transport_encryption tls: $TLS_ENDPOINTS is missing; run the transport_encryption role\n";
    local $/;
    my $map = decode_json(<$fh>);
    close($fh);
    return $map->{endpoints} // $map;
}

# Portals of an export in the order the service lists them, routed through stunnel for tls.
sub _portals {
    my ($scfg, $vol) = @_;
    my $export = $vol->{export} // $vol;
    my @portals = @{ $export->{portals} // [] };
    die "volume '$vol->{name}' is not exported (no portals)\n" if !@portals;
    my $tls = _tls_endpoints($scfg);
    for my $p (@portals) {
        $p = "$p:3260" if $p !~ /:\d+$/;
        if (%$tls) {
            die "transport_encryption tls: no local endpoint for portal $p in $TLS_ENDPOINTS\n" if !$tls->{$p};
            $p = $tls->{$p};
        }
    }
    return @portals;
}

sub _export_info {
    my ($vol) = @_;
    my $export = $vol->{export} // $vol;
    my $iqn = $export->{iqn} // die "volume '$vol->{name}' has no iSCSI target\n";
    my $lun = $export->{lun} // 1;
    return ($iqn, $lun, $export);
}

# CHAP credentials of an export, or undef. The service hands the secrets to read-write tokens
# only; a read-only token sees the user without a password.
sub _chap {
    my ($vol) = @_;
    my $chap = ($vol->{export} // $vol)->{chap};
    return undef if ref($chap) ne 'HASH' || !defined($chap->{user});
    die "pvesan: volume '$vol->{name}' has CHAP, but the service gave no CHAP password to this "
        . "storage's token (a read-only token?); the storage needs a read-write token\n"
        if !defined($chap->{password}) || (ref($chap->{mutual}) eq 'HASH' && !defined($chap->{mutual}->{password}));
    return $chap;
}

# Which data path a volume takes (see the header): the kernel initiator or QEMU's libiscsi.
sub _uses_kernel {
    my ($scfg, $vol) = @_;
    return $scfg->{multipath} || defined(_chap($vol)) ? 1 : 0;
}

# The node's iSCSI initiator name, read like qemu-server's get_iscsi_initiator_name.
sub _initiator_name {
    open(my $fh, '<', $INITIATOR_NAME_FILE) or return undef;
    while (defined(my $line = <$fh>)) {
        return $1 if $line =~ m/^\s*InitiatorName\s*=\s*([\.\-:\w]+)/;
    }
    return undef;
}

sub _iscsi_url {
    my ($scfg, $vol) = @_;
    my ($iqn, $lun) = _export_info($vol);
    my ($portal) = _portals($scfg, $vol);
    return "iscsi://$portal/$iqn/$lun";
}

# libiscsi options of a volume without CHAP, as QEMU's -blockdev takes them. QEMU ignores
# `-iscsi initiator-name=...` (which qemu-server passes) for -blockdev; the node's name has to be
# in the options, or initiator ACLs, which list the nodes' names, refuse the login.
sub _libiscsi_options {
    my ($scfg, $vol) = @_;
    my ($iqn, $lun) = _export_info($vol);
    my ($portal) = _portals($scfg, $vol);
    my $opts = { driver => 'iscsi', transport => 'tcp', portal => $portal, target => $iqn, lun => $lun + 0 };
    my $initiator = _initiator_name();
    $opts->{'initiator-name'} = $initiator if defined($initiator);
    return $opts;
}

# Run a command; returns its output (stdout and stderr). %opt: quiet => 1 keeps the output out
# of the error message (for commands that print secrets).
sub _run {
    my ($cmd, %opt) = @_;
    _log_call('exec', join(' ', @$cmd));
    my $pid = open3(my $in, my $out, undef, @$cmd);
    close($in);
    local $/;
    my $text = <$out> // '';
    waitpid($pid, 0);
    my $rc = $? >> 8;
    if ($? != 0) {
        die "'@$cmd' failed (exit code $rc)\n" if $opt{quiet};
        die "'@$cmd' failed: $text\n";
    }
    return $text;
}

# ---------------------------------------------------------------------------------------------
# The kernel initiator (open-iscsi + dm-multipath)

# Portals the kernel initiator logs in to: all with multipath, else the first.
sub _kernel_portals {
    my ($scfg, $vol) = @_;
    my @portals = _portals($scfg, $vol);
    return $scfg->{multipath} ? @portals : ($portals[0]);
}

sub _wwid {
    my ($vol) = @_;
    return $vol->{wwid} // ($vol->{export} // {})->{wwid};
}

# One by-path device per portal, the multipath map over them if any.
sub _kernel_device {
    my ($scfg, $vol) = @_;
    my ($iqn, $lun) = _export_info($vol);
    my @devs = map { "$DEV_DIR/disk/by-path/ip-$_-iscsi-$iqn-lun-$lun" } _kernel_portals($scfg, $vol);
    my $wwid = _wwid($vol);
    return "$DEV_DIR/mapper/$wwid" if $scfg->{multipath} && $wwid && -b "$DEV_DIR/mapper/$wwid";
    return $devs[0];
}

# open-iscsi's record file of a node: <nodes>/<iqn>/<host>,<port>[,<tpgt>] is a file (made by
# `-o new`) or a directory with one file per iface (made by discovery).
sub _node_record_file {
    my ($iqn, $portal) = @_;
    my ($host, $port) = $portal =~ /^\[?(.*?)\]?:(\d+)$/ or die "pvesan: bad portal '$portal'\n";
    my $dir = "$ISCSI_NODES_DIR/$iqn";
    opendir(my $dh, $dir) or die "pvesan: no open-iscsi node record for $iqn in $ISCSI_NODES_DIR ($!)\n";
    my @found = grep { /^\Q$host\E,\Q$port\E(?:,-?\d+)?$/ } readdir($dh);
    closedir($dh);
    die "pvesan: expected one open-iscsi node record for $iqn at $portal in $dir, found "
        . scalar(@found) . "\n" if @found != 1;
    my $file = "$dir/$found[0]";
    $file = "$file/default" if -d $file;
    die "pvesan: open-iscsi node record $file is missing\n" if !-f $file;
    return $file;
}

# CHAP of a node record. Names go through `iscsiadm -o update`; the secrets are written into the
# record file itself (0600, root), so that no password is ever on a command line (where any user
# of the node can read it in /proc/<pid>/cmdline while iscsiadm runs). iscsiadm reads the record
# at every login and hands it to iscsid over its socket. `iscsiadm -S` then shows what open-iscsi
# itself parsed, which is checked against what was meant.
sub _set_node_chap {
    my ($iqn, $portal, $chap) = @_;
    my @node = ('iscsiadm', '-m', 'node', '-T', $iqn, '-p', $portal);
    my $mutual = ref($chap->{mutual}) eq 'HASH' ? $chap->{mutual} : undef;
    my %want = (
        'node.session.auth.authmethod' => 'CHAP',
        'node.session.auth.username' => $chap->{user},
        'node.session.auth.password' => $chap->{password},
        'node.session.auth.username_in' => $mutual ? $mutual->{user} : '',
        'node.session.auth.password_in' => $mutual ? $mutual->{password} : '',
    );
    for my $v (values %want) {
        die "pvesan: CHAP values must be one line without leading or trailing blanks\n"
            if $v =~ /[\r\n]/ || $v =~ /^\s|\s$/;
    }
    my @names = ('node.session.auth.authmethod', 'node.session.auth.username');
    push @names, 'node.session.auth.username_in' if $mutual;
    _run([@node, '-o', 'update', map { ('-n', $_, '-v', $want{$_}) } @names]);

    my $file = _node_record_file($iqn, $portal);
    open(my $fh, '<', $file) or die "pvesan: cannot read $file: $!\n";
    my @lines = grep { !/^node\.session\.auth\.(?:password|password_in|username_in)\s*=/ } <$fh>;
    close($fh);
    my @secret = ("node.session.auth.password = $want{'node.session.auth.password'}\n");
    push @secret, "node.session.auth.username_in = $want{'node.session.auth.username_in'}\n",
        "node.session.auth.password_in = $want{'node.session.auth.password_in'}\n" if $mutual;
    my ($end) = grep { $lines[$_] =~ /^# END RECORD/ } 0 .. $#lines;
    splice(@lines, $end // scalar(@lines), 0, @secret);
    _write_private($file, join('', @lines));

    my %got = map { /^(node\.session\.auth\.\S+) = (.*)$/ ? ($1, $2) : () }
        split(/\n/, _run([@node, '-S'], quiet => 1));
    for my $k (sort keys %want) {
        my $v = ($got{$k} // '') eq '<empty>' ? '' : $got{$k} // '';
        die "pvesan: open-iscsi did not take $k for $iqn at $portal from $file\n" if $v ne $want{$k};
    }
}

sub _sessions {
    my $out = eval { _run(['iscsiadm', '-m', 'session']) } // '';    # exit 21: no sessions
    return [grep { /^\S+: \[\d+\] / } split(/\n/, $out)];
}

sub _has_session {
    my ($sessions, $iqn, $portal) = @_;
    (my $p = $portal) =~ s/:(\d+)$/:$1,/;    # "tcp: [1] 10.0.2.2:13291,1 iqn... (non-flash)"
    return scalar(grep { index($_, " $p") >= 0 && / \Q$iqn\E(?: |$)/ } @$sessions);
}

# Whether this node is logged in on every path the volume uses.
sub _kernel_active {
    my ($scfg, $vol) = @_;
    my ($iqn) = _export_info($vol);
    my $sessions = _sessions();
    return !grep { !_has_session($sessions, $iqn, $_) } _kernel_portals($scfg, $vol);
}

sub _kernel_login {
    my ($scfg, $vol) = @_;
    my ($iqn) = _export_info($vol);
    my $chap = _chap($vol);
    my $sessions = _sessions();
    for my $portal (_kernel_portals($scfg, $vol)) {
        next if _has_session($sessions, $iqn, $portal);
        my @node = ('iscsiadm', '-m', 'node', '-T', $iqn, '-p', $portal);
        _run([@node, '-o', 'new']);
        eval {
            _set_node_chap($iqn, $portal, $chap) if $chap;
            _run([@node, '--login']);
        };
        if (my $err = $@) {
            eval { _run([@node, '-o', 'delete']) };    # no record (and no secret) left behind
            die $err;
        }
    }
    my $dev = _kernel_device($scfg, $vol);
    for (1 .. 50) {    # udev creates the device links asynchronously
        last if -b $dev;
        select(undef, undef, undef, 0.1);
    }
    die "pvesan: $dev did not appear after the iSCSI login\n" if !-b $dev;
}

# Flush the map, log out, and drop the node records (with CHAP, the secrets leave the disk).
sub _kernel_logout {
    my ($scfg, $vol) = @_;
    my ($iqn) = _export_info($vol);
    my $wwid = _wwid($vol);
    eval { _run(['multipath', '-f', $wwid]) } if $scfg->{multipath} && $wwid && -b "$DEV_DIR/mapper/$wwid";
    for my $portal (_portals($scfg, $vol)) {
        my @node = ('iscsiadm', '-m', 'node', '-T', $iqn, '-p', $portal);
        eval { _run([@node, '--logout']) };
        eval { _run([@node, '-o', 'delete']) };
    }
}

# After a resize: the kernel re-reads the capacity of every logged-in path, dm-multipath the map.
sub _kernel_rescan {
    my ($scfg, $vol) = @_;
    my ($iqn) = _export_info($vol);
    my $sessions = _sessions();
    my $rescanned = 0;
    for my $portal (_kernel_portals($scfg, $vol)) {
        next if !_has_session($sessions, $iqn, $portal);
        _run(['iscsiadm', '-m', 'node', '-T', $iqn, '-p', $portal, '-R']);
        $rescanned++;
    }
    my $wwid = _wwid($vol);
    _run(['multipathd', 'resize', 'map', $wwid]) if $rescanned && $scfg->{multipath} && $wwid && -b "$DEV_DIR/mapper/$wwid";
}

# ---------------------------------------------------------------------------------------------
# Hooks: the token is a sensitive property (API 11+): PVE strips it from storage.cfg and hands
# it to these hooks, which keep it where Proxmox keeps secrets.

sub on_add_hook {
    my ($class, $storeid, $scfg, %param) = @_;
    _log_call('on_add_hook', $storeid, \%param);
    if (defined(my $token = $param{auth_token})) {
        _write_token($storeid, $token);
    }
    return undef;
}

sub on_update_hook {
    my ($class, $storeid, $scfg, %param) = @_;
    _log_call('on_update_hook', $storeid, \%param);
    if (exists $param{auth_token}) {
        if (defined($param{auth_token})) {
            _write_token($storeid, $param{auth_token});
        } else {
            _delete_token($storeid);
        }
    }
    return undef;
}

sub on_delete_hook {
    my ($class, $storeid, $scfg) = @_;
    _log_call('on_delete_hook', $storeid);
    _delete_token($storeid);
    unlink("$STATUS_CACHE_DIR/status-$storeid.json");
    return undef;
}

# ---------------------------------------------------------------------------------------------
# Storage

sub status {
    my ($class, $storeid, $scfg, $cache) = @_;
    _log_call('status', $storeid);
    my $st = _status($storeid, $scfg);
    # real capacity of the pools this storage allocates from, capped by the tenant's quota
    my ($total, $used, $avail) = map { ($_ // 0) + 0 } @$st{qw(total used available)};
    return ($total, $avail, $used, $st->{active} ? 1 : 0);
}

# Nothing to set up on the node (volumes are activated one by one); the (cached) status call
# makes a wrong URL, certificate or token fail here, with the reason.
sub activate_storage {
    my ($class, $storeid, $scfg, $cache) = @_;
    _log_call('activate_storage', $storeid);
    _status($storeid, $scfg);
    return 1;
}

sub deactivate_storage {
    my ($class, $storeid, $scfg, $cache) = @_;
    _log_call('deactivate_storage', $storeid);
    return 1;
}

# API 14: the service's own id (its database's), the same for every storage.cfg entry and
# every node that reaches the same service.
sub get_identity {
    my ($class, $scfg, $storeid) = @_;
    _log_call('get_identity', $storeid);
    my $id = _status($storeid, $scfg)->{instance_id};
    die "pvesan storage '$storeid': the service reports no instance_id (pvesan-service older than this plugin)\n"
        if !defined($id) || $id eq '';
    return "$id";
}

# ---------------------------------------------------------------------------------------------
# Volumes

sub parse_volname {
    my ($class, $volname) = @_;
    if ($volname =~ m!^((base)-(\d+)-[a-z0-9][a-z0-9._-]*)/((vm|base)-(\d+)-[a-z0-9][a-z0-9._-]*)$!) {
        my ($basename, $basevmid, $name, $vmid) = ($1, $3, $4, $6);
        return ('images', $name, $vmid, $basename, $basevmid, $5 eq 'base', 'raw');
    }
    if ($volname =~ m!^((vm|base)-(\d+)-[a-z0-9][a-z0-9._-]*)$!) {
        return ('images', $1, $3, undef, undef, $2 eq 'base', 'raw');
    }
    die "unable to parse pvesan volume name '$volname': expected vm-<vmid>-disk-<n> or base-<vmid>-disk-<n>\n";
}

sub alloc_image {
    my ($class, $storeid, $scfg, $vmid, $fmt, $name, $size) = @_;
    _log_call('alloc_image', $storeid, $vmid, $fmt, $name, $size);

    die "unsupported format '$fmt': pvesan volumes are raw\n" if $fmt ne 'raw';
    if ($name) {
        my (undef, undef, $owner) = $class->parse_volname($name);
        die "illegal name '$name' - it belongs to VM $owner, not VM $vmid\n" if $owner ne $vmid;
        die "volume '$storeid:$name' already exists\n" if _volume_exists($storeid, $scfg, $name);
    } else {
        $name = $class->find_free_diskname($storeid, $scfg, $vmid, $fmt);
    }

    # PVE passes KiB
    _cli($storeid, $scfg, 'volume', 'create', $name, $size * 1024, _placement($scfg));
    return $name;
}

sub free_image {
    my ($class, $storeid, $scfg, $volname, $isBase, $format) = @_;
    _log_call('free_image', $storeid, $volname, $isBase);
    my $name = $class->_service_name($volname);
    my $vol = _volume_show($storeid, $scfg, $name);
    _kernel_logout($scfg, $vol) if _uses_kernel($scfg, $vol);
    _cli($storeid, $scfg, 'volume', 'delete', $name);
    return undef;
}

sub list_images {
    my ($class, $storeid, $scfg, $vmid, $vollist, $cache) = @_;
    _log_call('list_images', $storeid, $vmid, $vollist);

    my @args = ('volume', 'list');
    push @args, '--prefix', "vm-$vmid-" if defined($vmid) && !$vollist;
    my $vols = _items(_cli($storeid, $scfg, @args), 'volumes');
    my %wanted = map { $_ => 1 } @{ $vollist // [] };

    my $res = [];
    for my $vol (@$vols) {
        my $name = $vol->{name};
        next if $name !~ m/^(vm|base)-(\d+)-/;
        my $owner = $2;
        next if defined($vmid) && !$vollist && $owner ne $vmid;
        # a linked clone keeps its base in the volname, as Proxmox expects
        my $origin = $vol->{parent} // '';
        my $volname = $origin =~ m/^base-\d+-/ ? "$origin/$name" : $name;
        my $volid = "$storeid:$volname";
        next if $vollist && !$wanted{$volid};
        push @$res, {
            volid => $volid,
            format => 'raw',
            size => $vol->{size} + 0,
            used => ($vol->{allocated} // $vol->{size}) + 0,
            vmid => $owner,
            ctime => _epoch($vol->{created_at}),
            ($origin ? (parent => $origin) : ()),
        };
    }
    return $res;
}

# The storage id of a storage.cfg section: base-class code calls filesystem_path($scfg, ...)
# without one, and the parser never puts it into $scfg.
sub _storeid_of {
    my ($scfg) = @_;
    return $scfg->{storage} if defined($scfg->{storage});
    my $ids = eval { PVE::Storage::config()->{ids} } // {};
    my $flat = sub {    # a section as text: its keys and values, hashes (content, nodes) sorted
        my ($s) = @_;
        return join("\n", map {
            my $v = $s->{$_};
            "$_=" . (ref($v) eq 'HASH' ? join(',', sort keys %$v) : $v // '')
        } sort grep { $_ ne 'storage' && $_ ne 'digest' } keys %$s);
    };
    my $want = $flat->($scfg);
    my @same = grep { ref($ids->{$_}) && $flat->($ids->{$_}) eq $want } sort keys %$ids;
    die "pvesan: cannot tell which storage this is (" . (@same ? "@same" : 'none')
        . " in storage.cfg match its settings)\n" if @same != 1;
    return $same[0];
}

sub filesystem_path {
    my ($class, $scfg, $volname, $snapname) = @_;
    return $class->path($scfg, $volname, _storeid_of($scfg), $snapname);
}

sub path {
    my ($class, $scfg, $volname, $storeid, $snapname) = @_;
    _log_call('path', $storeid, $volname, $snapname);
    die "pvesan: snapshots are not accessible as block devices ($volname\@$snapname)\n" if defined($snapname);
    my (undef, $name, $vmid) = $class->parse_volname($volname);
    my $vol = _volume_show($storeid, $scfg, $name);
    my $path = _uses_kernel($scfg, $vol) ? _kernel_device($scfg, $vol) : _iscsi_url($scfg, $vol);
    return wantarray ? ($path, $vmid, 'images') : $path;
}

# PVE 9 (API 12+) attaches disks with -blockdev; what is returned must pass pve-storage's
# $allowed_qemu_blockdev_options (file/host_device: filename; iscsi: transport, portal, target,
# lun, initiator-name, header-digest, timeout).
sub qemu_blockdev_options {
    my ($class, $scfg, $storeid, $volname, $machine_version, $options) = @_;
    _log_call('qemu_blockdev_options', $storeid, $volname);
    my $snap = $options->{'snapshot-name'};
    die "pvesan: snapshot '$snap' of '$volname' cannot be attached: the service exports volumes, "
        . "not snapshots (clone the snapshot to a volume instead)\n" if defined($snap) && $snap ne 'current';
    my $name = $class->_service_name($volname);
    my $vol = _volume_show($storeid, $scfg, $name);
    return { driver => 'host_device', filename => _kernel_device($scfg, $vol) } if _uses_kernel($scfg, $vol);
    return _libiscsi_options($scfg, $vol);
}

sub activate_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $cache, $hints) = @_;
    _log_call('activate_volume', $storeid, $volname, $snapname);
    die "pvesan: snapshots cannot be activated ($volname\@$snapname)\n" if defined($snapname);
    my $name = $class->_service_name($volname);
    my $vol = _volume_show($storeid, $scfg, $name);    # fails with a clear message if it is gone
    _kernel_login($scfg, $vol) if _uses_kernel($scfg, $vol);
    return 1;
}

sub deactivate_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $cache) = @_;
    _log_call('deactivate_volume', $storeid, $volname, $snapname);
    return 1 if defined($snapname);
    my $name = $class->_service_name($volname);
    my $vol = eval { _volume_show($storeid, $scfg, $name) } or return 1;
    _kernel_logout($scfg, $vol) if _uses_kernel($scfg, $vol);
    return 1;
}

sub volume_size_info {
    my ($class, $scfg, $storeid, $volname, $timeout) = @_;
    _log_call('volume_size_info', $storeid, $volname);
    my ($vtype, $name, $vmid, $basename) = $class->parse_volname($volname);
    my $vol = _volume_show($storeid, $scfg, $name);
    my $size = $vol->{size} + 0;
    # bytes the volume takes in its pool; the whole size when the backend cannot tell
    my $used = ($vol->{allocated} // $vol->{size}) + 0;
    return wantarray ? ($size, 'raw', $used, $basename, _epoch($vol->{created_at})) : $size;
}

sub volume_resize {
    my ($class, $scfg, $storeid, $volname, $size, $running, $snapname) = @_;
    _log_call('volume_resize', $storeid, $volname, $size, $running, $snapname);
    # API 15: only snapshot-as-volume-chain storages resize snapshots
    die "pvesan: cannot resize snapshot '$snapname' of '$volname': snapshots keep the size they were taken with\n"
        if defined($snapname);
    my $name = $class->_service_name($volname);
    my $vol = _cli($storeid, $scfg, 'volume', 'resize', $name, $size);    # bytes; the service refuses to shrink
    _kernel_rescan($scfg, $vol) if ref($vol) eq 'HASH' && $vol->{export} && _uses_kernel($scfg, $vol);
    return undef;
}

sub rename_volume {
    my ($class, $scfg, $storeid, $source_volname, $target_vmid, $target_volname) = @_;
    _log_call('rename_volume', $storeid, $source_volname, $target_vmid, $target_volname);
    my (undef, $name, undef, $basename, undef, $isBase) = $class->parse_volname($source_volname);
    die "pvesan: cannot rename a base volume ($source_volname)\n" if $isBase;
    $target_volname = $class->find_free_diskname($storeid, $scfg, $target_vmid, 'raw') if !$target_volname;
    die "volume '$storeid:$target_volname' already exists\n" if _volume_exists($storeid, $scfg, $target_volname);
    _cli($storeid, $scfg, 'volume', 'rename', $name, $target_volname);
    return "$storeid:" . ($basename ? "$basename/$target_volname" : $target_volname);
}

# ---------------------------------------------------------------------------------------------
# Export and import (storage_migrate: offline migration and `qm disk move` to and from another
# storage type, remote migration of stopped guests): raw+size, the 8-byte little-endian size of
# pve-storage's common header followed by the raw data. The data goes through the volume's own
# data path: dd on the kernel device, or nbdcopy over qemu-nbd's libiscsi client.

sub volume_export_formats {
    my ($class, $scfg, $storeid, $volname, $snapshot, $base_snapshot, $with_snapshots) = @_;
    return () if defined($snapshot) || defined($base_snapshot) || $with_snapshots;
    return ('raw+size');
}

sub volume_import_formats {
    my ($class, $scfg, $storeid, $volname, $snapshot, $base_snapshot, $with_snapshots) = @_;
    return () if defined($base_snapshot) || $with_snapshots;
    return ('raw+size');
}

# Run $code with the volume's kernel device present: logged in for it, and out again after if
# the node was not logged in before (a guest that uses it keeps its sessions).
sub _with_kernel_device {
    my ($scfg, $vol, $code) = @_;
    my $was_active = _kernel_active($scfg, $vol);
    _kernel_login($scfg, $vol) if !$was_active;
    eval { $code->() };
    my $err = $@;
    _kernel_logout($scfg, $vol) if !$was_active;
    die $err if $err;
}

# qemu-nbd's --image-opts of a libiscsi volume.
sub _image_opts {
    my ($scfg, $vol) = @_;
    my $o = _libiscsi_options($scfg, $vol);
    return join(',', 'driver=raw', map { "file.$_=$o->{$_}" } sort keys %$o);
}

# Run a command that reads the stream from $fh{in} or writes it to $fh{out}; stderr goes to
# ours (the task log). The command gets a pipe, never the handle itself: nbdcopy treats a regular
# file on stdin/stdout as a random-access image (pread/pwrite from offset 0), which would
# overwrite or re-read the stream header (`pvesm export ... <file>` passes a file).
sub _run_with_fh {
    my ($cmd, %fh) = @_;
    _log_call('exec', join(' ', @$cmd));
    pipe(my $r, my $w) or die "pipe: $!\n";
    my $pid = fork() // die "fork: $!\n";
    if (!$pid) {
        eval {
            if ($fh{in}) { close($w); open(STDIN, '<&', $r) or die "stdin: $!\n"; }
            if ($fh{out}) { close($r); open(STDOUT, '>&', $w) or die "stdout: $!\n"; }
            exec(@$cmd) or die "exec $cmd->[0]: $!\n";
        };
        print STDERR $@;
        POSIX::_exit(127);
    }
    my ($from, $to) = $fh{in} ? ($fh{in}, $w) : ($r, $fh{out});
    close($fh{in} ? $r : $w);
    my $err;
    local $SIG{PIPE} = 'IGNORE';
    while (1) {
        my $n = sysread($from, my $buf, 1 << 20);
        if (!defined($n)) { $err = "read: $!\n"; last; }
        last if $n == 0;
        for (my $off = 0; $off < $n;) {
            my $m = syswrite($to, $buf, $n - $off, $off);
            if (!defined($m)) { $err = "write: $!\n"; last; }
            $off += $m;
        }
        last if $err;
    }
    close($fh{in} ? $w : $r);
    waitpid($pid, 0);
    die "'@$cmd' failed (exit code " . ($? >> 8) . ")\n" if $? != 0;
    die "pvesan: stream of '@$cmd' broke: $err" if $err;
}

sub volume_export {
    my ($class, $scfg, $storeid, $fh, $volname, $format, $snapshot, $base_snapshot, $with_snapshots) = @_;
    _log_call('volume_export', $storeid, $volname, $format, $snapshot, $base_snapshot, $with_snapshots);
    die "pvesan: volume export format '$format' is not available (raw+size without snapshots only)\n"
        if $format ne 'raw+size' || defined($snapshot) || defined($base_snapshot) || $with_snapshots;
    my $name = $class->_service_name($volname);
    my $vol = _volume_show($storeid, $scfg, $name);
    PVE::Storage::Plugin::write_common_header($fh, $vol->{size} + 0);
    if (_uses_kernel($scfg, $vol)) {
        _with_kernel_device($scfg, $vol, sub {
            _run_with_fh(['dd', 'if=' . _kernel_device($scfg, $vol), 'bs=64k', 'status=progress'], out => $fh);
        });
    } else {
        _run_with_fh(['nbdcopy', '--', '[', 'qemu-nbd', '--read-only', '--image-opts', _image_opts($scfg, $vol), ']', '-'],
            out => $fh);
    }
    return;
}

sub volume_import {
    my ($class, $scfg, $storeid, $fh, $volname, $format, $snapshot, $base_snapshot, $with_snapshots,
        $allow_rename) = @_;
    _log_call('volume_import', $storeid, $volname, $format, $snapshot, $base_snapshot, $with_snapshots, $allow_rename);
    die "pvesan: volume import format '$format' is not available (raw+size without snapshots only)\n"
        if $format ne 'raw+size' || defined($base_snapshot) || $with_snapshots;
    my (undef, $name, $vmid) = $class->parse_volname($volname);
    die "pvesan: cannot import into a linked clone ($volname)\n" if $volname =~ m!/!;
    if (_volume_exists($storeid, $scfg, $name)) {
        die "volume '$storeid:$name' already exists\n" if !$allow_rename;
        warn "volume '$storeid:$name' already exists - importing with a different name\n";
        $name = undef;
    }
    my $size = PVE::Storage::Plugin::read_common_header($fh);
    my $kib = int(($size + 1023) / 1024);
    $name = $class->alloc_image($storeid, $scfg, $vmid, 'raw', $name, $kib);
    eval {
        my $vol = _volume_show($storeid, $scfg, $name);
        if (_uses_kernel($scfg, $vol)) {
            _with_kernel_device($scfg, $vol, sub {
                _run_with_fh(['dd', 'of=' . _kernel_device($scfg, $vol), 'bs=64k', 'conv=sparse'], in => $fh);
            });
        } else {
            # a new volume reads as zeros: nbdcopy need not write them
            _run_with_fh(['nbdcopy', '--destination-is-zero', '--', '-', '[', 'qemu-nbd', '--image-opts',
                _image_opts($scfg, $vol), ']'], in => $fh);
        }
    };
    if (my $err = $@) {
        eval { $class->free_image($storeid, $scfg, $name, 0, 'raw') };
        warn $@ if $@;
        die $err;
    }
    return "$storeid:$name";
}

# ---------------------------------------------------------------------------------------------
# Snapshots, templates, clones

sub volume_snapshot {
    my ($class, $scfg, $storeid, $volname, $snap) = @_;
    _log_call('volume_snapshot', $storeid, $volname, $snap);
    _cli($storeid, $scfg, 'snapshot', 'create', $class->_service_name($volname), $snap);
    return undef;
}

sub volume_snapshot_delete {
    my ($class, $scfg, $storeid, $volname, $snap, $running) = @_;
    _log_call('volume_snapshot_delete', $storeid, $volname, $snap, $running);
    _cli($storeid, $scfg, 'snapshot', 'delete', $class->_service_name($volname), $snap);
    return undef;
}

# The snapshots the service keeps of a volume ({} when the volume does not exist): names as
# keys, with the service's snapshot id and the creation time (ApiChangeLog 15: the replication
# fields; this is no snapshot-as-volume-chain storage, so there is no `current` chain entry).
# Snapshots the service makes for itself (`__base__` of a template) are left out.
sub volume_snapshot_info {
    my ($class, $scfg, $storeid, $volname) = @_;
    _log_call('volume_snapshot_info', $storeid, $volname);
    my $snaps = eval { _items(_cli($storeid, $scfg, 'snapshot', 'list', $class->_service_name($volname)), 'snapshots') };
    if (my $err = $@) {
        return {} if ref($err) && $err->isa('PVE::Storage::Custom::PVESANPlugin::NotFound');
        die $err;
    }
    my $info = {};
    for my $s (@$snaps) {
        next if $s->{name} =~ /^__/;
        $info->{ $s->{name} } = {
            id => $s->{id},
            timestamp => _epoch($s->{created_at}),
            (defined($s->{size}) ? ('virtual-size' => $s->{size} + 0) : ()),
        };
    }
    return $info;
}

sub volume_rollback_is_possible {
    my ($class, $scfg, $storeid, $volname, $snap, $blockers) = @_;
    _log_call('volume_rollback_is_possible', $storeid, $volname, $snap);
    my $snaps = _items(_cli($storeid, $scfg, 'snapshot', 'list', $class->_service_name($volname)), 'snapshots');
    die "pvesan: snapshot '$snap' of '$volname' does not exist\n" if !grep { $_->{name} eq $snap } @$snaps;
    return 1;
}

sub volume_snapshot_rollback {
    my ($class, $scfg, $storeid, $volname, $snap) = @_;
    _log_call('volume_snapshot_rollback', $storeid, $volname, $snap);
    _cli($storeid, $scfg, 'snapshot', 'rollback', $class->_service_name($volname), $snap);
    return undef;
}

sub volume_snapshot_needs_fsfreeze { return 0; }

# API 12: the service snapshots volumes of running VMs itself.
sub volume_qemu_snapshot_method { return 'storage'; }

sub rename_snapshot {
    my ($class, $scfg, $storeid, $volname, $source_snap, $target_snap) = @_;
    die "pvesan: renaming snapshots is not supported ($volname: $source_snap -> $target_snap)\n";
}

sub create_base {
    my ($class, $storeid, $scfg, $volname) = @_;
    _log_call('create_base', $storeid, $volname);
    my (undef, $name, $vmid, $basename, undef, $isBase) = $class->parse_volname($volname);
    die "create_base not possible with base image\n" if $isBase;
    (my $newname = $name) =~ s/^vm-/base-/;
    # the service takes the implicit base snapshot of a template on its first clone
    _cli($storeid, $scfg, 'volume', 'rename', $name, $newname);
    return $newname;
}

sub clone_image {
    my ($class, $scfg, $storeid, $volname, $vmid, $snap) = @_;
    _log_call('clone_image', $storeid, $volname, $vmid, $snap);
    my (undef, $name, undef, undef, undef, $isBase) = $class->parse_volname($volname);
    die "pvesan: linked clones are made from templates (base volumes) only\n" if !$isBase && !$snap;
    my $newname = $class->find_free_diskname($storeid, $scfg, $vmid, 'raw');
    _cli($storeid, $scfg, 'volume', 'clone', $name, $newname, ($snap ? ('--snapshot', $snap) : ()));
    return $isBase ? "$name/$newname" : $newname;
}

sub volume_has_feature {
    my ($class, $scfg, $feature, $storeid, $volname, $snapname, $running, $opts) = @_;
    my $features = {
        snapshot => { current => 1, snap => 1 },
        clone => { base => 1, snap => 1 },
        template => { current => 1 },
        copy => { base => 1, current => 1 },
        sparseinit => { base => 1, current => 1 },
        rename => { current => 1 },
    };
    my (undef, undef, undef, undef, undef, $isBase) = $class->parse_volname($volname);
    my $key = $snapname ? 'snap' : $isBase ? 'base' : 'current';
    return $features->{$feature}->{$key} ? 1 : undef;
}

package PVE::Storage::Custom::PVESANPlugin::NotFound;

# A 404 of the service, told apart from other failures; prints as its message.
use overload '""' => sub { ${ $_[0] } }, fallback => 1;

sub new { my ($class, $msg) = @_; return bless \$msg, $class; }

1;
