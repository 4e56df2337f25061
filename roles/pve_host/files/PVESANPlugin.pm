package PVE::Storage::Custom::PVESANPlugin;

# Proxmox VE storage plugin for pvesan-service (collection pvesan.storage, role pve_host).
#
# Thin by design: every storage operation is one call of the `pvesan` CLI with `--json`; the
# service owns all state. The API token is passed to the CLI in the environment, never on the
# command line, and is read from /etc/pve/priv/storage/<id>.pw, never from storage.cfg.
#
# Data path (`path`):
#   multipath 0 (default) - iscsi://<portal>/<iqn>/<lun> for QEMU's built-in libiscsi: no host
#                           state, no login, works for VM disks only; one portal.
#   multipath 1           - open-iscsi logs in to every portal on activate_volume and `path` is
#                           the dm-multipath device (/dev/mapper/<wwid>), or the by-path device
#                           when only one path exists: needed for containers (rootdir) and for
#                           surviving the loss of one storage network.
# With transport_encryption tls, portals are replaced by the local stunnel endpoints listed in
# /etc/pvesan/tls-endpoints.json (role transport_encryption).
#
# Debugging: every call is logged to syslog (LOG_INFO) as "pvesan: <method> <args>", secrets
# removed:  journalctl -f | grep pvesan:

use strict;
use warnings;

use IPC::Open3 qw(open3);
use JSON::PP;
use Symbol qw(gensym);
use Sys::Syslog qw(openlog syslog);

use PVE::Storage::Plugin;

use base qw(PVE::Storage::Plugin);

our $VERSION = '1.0.0';

# Overridable by tests (and by admins who install the CLI elsewhere).
our $PVESAN_CLI = $ENV{PVESAN_CLI} // '/usr/local/bin/pvesan';
our $PRIV_DIR = '/etc/pve/priv/storage';
our $TLS_ENDPOINTS = '/etc/pvesan/tls-endpoints.json';
our $DEV_DIR = '/dev';    # udev's device links (by-path, dm-multipath maps) are below it
our $CLI_TIMEOUT = 45;    # cluster storage lock work is killed after 60 s
our $LOGGER = sub { my ($msg) = @_; openlog('pvesan', 'pid', 'daemon'); syslog('info', '%s', $msg); };

# Keys whose values never reach a log line.
my %SECRET_KEY = map { $_ => 1 } qw(auth_token token password secret chap_password mutual_password);

# ---------------------------------------------------------------------------------------------
# API version negotiation (pve-storage PVE/Storage.pm: APIVER, APIAGE).
# Tested with APIVER 10 (PVE 7.1) .. 13 (PVE 9.0); newer versions accept us while
# APIVER - APIAGE <= $TESTED_APIVER, so we answer $TESTED_APIVER there.
my $MIN_APIVER = 10;
my $TESTED_APIVER = 13;

sub api {
    my $apiver = eval { PVE::Storage::APIVER() } // $TESTED_APIVER;
    my $apiage = eval { PVE::Storage::APIAGE() } // 0;
    return $MIN_APIVER if $apiver < $MIN_APIVER;    # too old: PVE refuses to load us and says why
    return $apiver if $apiver <= $TESTED_APIVER;
    return $TESTED_APIVER if $apiver - $apiage <= $TESTED_APIVER;
    return $MIN_APIVER;    # far newer, beyond its compatibility window: refused, with the reason
}

# A shared storage: PVE marks the types in @SHARED_STORAGE as shared in parse_config, so the
# admin needs no `shared 1` (the driver guide's open question). The list is a package variable
# of PVE::Storage::Plugin; joining it is how other custom plugins do the same.
push @PVE::Storage::Plugin::SHARED_STORAGE, 'pvesan'
    if !grep { $_ eq 'pvesan' } @PVE::Storage::Plugin::SHARED_STORAGE;

sub type { return 'pvesan'; }

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

sub _write_token {
    my ($storeid, $token) = @_;
    mkdir $PRIV_DIR, 0700 if !-d $PRIV_DIR;
    my $file = _token_file($storeid);
    my $tmp = "$file.tmp.$$";
    my $old = umask(077);
    open(my $fh, '>', $tmp) or do { umask($old); die "cannot write $tmp: $!\n"; };
    umask($old);
    print $fh "$token\n";
    close($fh) or die "cannot write $tmp: $!\n";
    rename($tmp, $file) or die "cannot rename $tmp to $file: $!\n";
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
        die "pvesan storage '$storeid': pvesan @args: $msg\n";
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

sub _iscsi_url {
    my ($scfg, $vol) = @_;
    my ($iqn, $lun, $export) = _export_info($vol);
    my ($portal) = _portals($scfg, $vol);
    my $auth = '';
    if (my $chap = $export->{chap}) {
        # libiscsi takes CHAP credentials only in the URL; see docs/guide.md (known limits)
        $auth = "$chap->{user}%$chap->{password}@" if $chap->{user};
    }
    return "iscsi://$auth$portal/$iqn/$lun";
}

sub _run {
    my (@cmd) = @_;
    _log_call('exec', join(' ', @cmd));
    my $pid = open3(my $in, my $out, undef, @cmd);
    close($in);
    local $/;
    my $text = <$out> // '';
    waitpid($pid, 0);
    die "'@cmd' failed: $text\n" if $? != 0;
    return $text;
}

# Kernel initiator path: one by-path device per portal, the multipath map over them if any.
sub _kernel_device {
    my ($scfg, $vol) = @_;
    my ($iqn, $lun) = _export_info($vol);
    my @devs = map { "$DEV_DIR/disk/by-path/ip-$_-iscsi-$iqn-lun-$lun" } _portals($scfg, $vol);
    my $wwid = $vol->{wwid} // ($vol->{export} // {})->{wwid};
    return "$DEV_DIR/mapper/$wwid" if $scfg->{multipath} && $wwid && -b "$DEV_DIR/mapper/$wwid";
    return $devs[0];
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
    return undef;
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
    $class->deactivate_volume($storeid, $scfg, $volname, undef, {}) if $scfg->{multipath};
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
            ($origin ? (parent => $origin) : ()),
        };
    }
    return $res;
}

sub status {
    my ($class, $storeid, $scfg, $cache) = @_;
    _log_call('status', $storeid);
    my $st = _cli($storeid, $scfg, 'status', _placement($scfg));
    # real capacity of the pools this storage allocates from, capped by the tenant's quota
    my ($total, $used, $avail) = map { ($_ // 0) + 0 } @$st{qw(total used available)};
    return ($total, $avail, $used, $st->{active} ? 1 : 0);
}

sub activate_storage {
    my ($class, $storeid, $scfg, $cache) = @_;
    _log_call('activate_storage', $storeid);
    # one cheap authenticated call: a wrong URL, certificate or token fails here with the reason
    return 1 if $cache->{"pvesan-$storeid-active"};
    _cli($storeid, $scfg, 'status');
    $cache->{"pvesan-$storeid-active"} = 1;
    return 1;
}

sub deactivate_storage {
    my ($class, $storeid, $scfg, $cache) = @_;
    _log_call('deactivate_storage', $storeid);
    return 1;
}

sub filesystem_path {
    my ($class, $scfg, $volname, $snapname) = @_;
    die "pvesan: snapshots are not accessible as block devices ($volname\@$snapname)\n" if defined($snapname);
    my (undef, $name, $vmid) = $class->parse_volname($volname);
    my $storeid = $scfg->{storage} // die "pvesan: filesystem_path called without storage id\n";
    my $path = _path_of($storeid, $scfg, $name);
    return wantarray ? ($path, $vmid, 'images') : $path;
}

sub _path_of {
    my ($storeid, $scfg, $name) = @_;
    my $vol = _volume_show($storeid, $scfg, $name);
    return $scfg->{multipath} ? _kernel_device($scfg, $vol) : _iscsi_url($scfg, $vol);
}

sub path {
    my ($class, $scfg, $volname, $storeid, $snapname) = @_;
    _log_call('path', $storeid, $volname, $snapname);
    die "pvesan: snapshots are not accessible as block devices ($volname\@$snapname)\n" if defined($snapname);
    my (undef, $name, $vmid) = $class->parse_volname($volname);
    my $path = _path_of($storeid, $scfg, $name);
    return wantarray ? ($path, $vmid, 'images') : $path;
}

# PVE 9 (API 12+) attaches disks with -blockdev: describe the libiscsi export, since the
# default implementation only knows files and host devices.
sub qemu_blockdev_options {
    my ($class, $scfg, $storeid, $volname, $machine_version, $options) = @_;
    _log_call('qemu_blockdev_options', $storeid, $volname);
    my $name = $class->_service_name($volname);
    my $vol = _volume_show($storeid, $scfg, $name);
    if ($scfg->{multipath}) {
        return { driver => 'host_device', filename => _kernel_device($scfg, $vol) };
    }
    my ($iqn, $lun, $export) = _export_info($vol);
    my ($portal) = _portals($scfg, $vol);
    my $opts = { driver => 'iscsi', transport => 'tcp', portal => $portal, target => $iqn, lun => $lun + 0 };
    if (my $chap = $export->{chap}) {
        $opts->{user} = $chap->{user};
        $opts->{'password-secret'} = $chap->{password_secret} if $chap->{password_secret};
    }
    return $opts;
}

sub activate_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $cache, $hints) = @_;
    _log_call('activate_volume', $storeid, $volname, $snapname);
    die "pvesan: snapshots cannot be activated ($volname\@$snapname)\n" if defined($snapname);
    my $name = $class->_service_name($volname);
    my $vol = _volume_show($storeid, $scfg, $name);    # fails with a clear message if it is gone
    return 1 if !$scfg->{multipath};

    my ($iqn) = _export_info($vol);
    for my $portal (_portals($scfg, $vol)) {
        my @node = ('iscsiadm', '-m', 'node', '-T', $iqn, '-p', $portal);
        _run(@node, '-o', 'new');
        my $session = eval { _run('iscsiadm', '-m', 'session') } // '';
        _run(@node, '--login') if index($session, "$portal,") < 0 || index($session, $iqn) < 0;
    }
    my $dev = _kernel_device($scfg, $vol);
    for (1 .. 50) {    # udev creates the device links asynchronously
        last if -b $dev;
        select(undef, undef, undef, 0.1);
    }
    die "pvesan: $dev did not appear after the iSCSI login\n" if !-b $dev;
    return 1;
}

sub deactivate_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $cache) = @_;
    _log_call('deactivate_volume', $storeid, $volname, $snapname);
    return 1 if !$scfg->{multipath} || defined($snapname);
    my $name = $class->_service_name($volname);
    my $vol = eval { _volume_show($storeid, $scfg, $name) } or return 1;
    my ($iqn) = _export_info($vol);
    my $wwid = $vol->{wwid} // ($vol->{export} // {})->{wwid};
    eval { _run('multipath', '-f', $wwid) } if $wwid && -b "$DEV_DIR/mapper/$wwid";
    for my $portal (_portals($scfg, $vol)) {
        eval { _run('iscsiadm', '-m', 'node', '-T', $iqn, '-p', $portal, '--logout') };
    }
    return 1;
}

sub volume_size_info {
    my ($class, $scfg, $storeid, $volname, $timeout) = @_;
    _log_call('volume_size_info', $storeid, $volname);
    my ($vtype, $name, $vmid, $basename) = $class->parse_volname($volname);
    my $vol = _volume_show($storeid, $scfg, $name);
    my $size = $vol->{size} + 0;
    my $used = ($vol->{allocated} // $vol->{size}) + 0;
    return wantarray ? ($size, 'raw', $used, $basename, $vol->{created_at}) : $size;
}

sub volume_resize {
    my ($class, $scfg, $storeid, $volname, $size, $running) = @_;
    _log_call('volume_resize', $storeid, $volname, $size, $running);
    my $name = $class->_service_name($volname);
    _cli($storeid, $scfg, 'volume', 'resize', $name, $size);    # bytes; the service refuses to shrink
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

1;
