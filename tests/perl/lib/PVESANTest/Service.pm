package PVESANTest::Service;

# A real pvesan-service for the plugin tests, started and torn down by the test itself:
#   loop-mounted XFS (reflink=1) as a file pool, a private tgtd (own control port and portal on
#   127.0.0.1), a self-signed TLS certificate, the service on a free port, one tenant + token.
# Skips (with the reason) when the service package is not installed or the test is not root.
# The `pvesan` CLI and `pvesan-service` are found in $PVESAN_BIN_DIR, the checkout's .venv/bin
# or PATH.

use strict;
use warnings;

use Exporter qw(import);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(WNOHANG);
use Test::More;

our @EXPORT_OK = qw(start_service);

my $REPO = do { my $d = __FILE__; $d =~ s{/tests/perl/lib/PVESANTest/Service\.pm$}{}; $d };

sub _find_bin {
    my ($name) = @_;
    for my $dir (grep { defined && length } $ENV{PVESAN_BIN_DIR}, "$REPO/.venv/bin", split(/:/, $ENV{PATH})) {
        return "$dir/$name" if -x "$dir/$name";
    }
    return undef;
}

sub _free_port {
    my $sock = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp')
        or die "no free port: $!";
    my $port = $sock->sockport;
    close($sock);
    return $port;
}

sub _run {
    my (@cmd) = @_;
    system(@cmd) == 0 or die "'@cmd' failed: $?\n";
}

sub _run_quiet {
    my (@cmd) = @_;
    my $out = qx(@{[ map { quotemeta } @cmd ]} 2>&1);
    die "'@cmd' failed: $out\n" if $? != 0;
}

sub _wait_for {
    my ($what, $pred) = @_;
    for (1 .. 300) {
        return 1 if $pred->();
        select(undef, undef, undef, 0.1);
    }
    die "timed out waiting for $what\n";
}

# Returns a handle with: cli, api_url, token, admin_token, ca, portal, portals, tgt_control, dir.
# %opt: portals => N (tgtd portals, default 1); guest => ADDRESS, the address under which a VM on
# qemu's user network reaches this host's loopback (10.0.2.2): the service then exports its
# portals with it and its certificate names it too.
sub start_service {
    my (%opt) = @_;
    my $cli = _find_bin('pvesan');
    my $server = _find_bin('pvesan-service');
    plan skip_all => 'pvesan-service is not installed (pip install -e service/ into .venv)' if !$cli || !$server;
    plan skip_all => 'needs root (loop-mounted XFS, tgtd)' if $> != 0;
    for my $tool (qw(tgtd tgtadm mkfs.xfs openssl)) {
        plan skip_all => "needs $tool" if !grep { -x "$_/$tool" } split(/:/, "$ENV{PATH}:/usr/sbin:/sbin");
    }

    my $self = bless { cli => $cli, pids => [], opt => \%opt }, __PACKAGE__;
    my $ok = eval { $self->_start($cli, $server); 1 };
    if (!$ok) {
        my $err = $@;
        diag("service log:\n" . (`cat $self->{dir}/service.log $self->{dir}/tgtadm.log 2>/dev/null` // ''));
        $self->stop();    # leave nothing behind
        die $err;
    }
    return $self;
}

sub _start {
    my ($self, $cli, $server) = @_;
    my $dir = $self->{dir} = tempdir('pvesan-perl-XXXXXX', TMPDIR => 1, CLEANUP => 0);

    # file pool on XFS with reflink: snapshots and clones are reflink copies
    _run('truncate', '-s', '1G', "$dir/pool.img");
    _run('mkfs.xfs', '-q', '-m', 'reflink=1', "$dir/pool.img");
    mkdir "$dir/mnt";
    _run('mount', '-o', 'loop', "$dir/pool.img", "$dir/mnt");
    $self->{mounted} = "$dir/mnt";
    mkdir "$dir/mnt/pool";

    # private tgtd
    my @ports = map { _free_port() } 1 .. ($self->{opt}{portals} // 1);
    my $control = 20000 + $ports[0] % 12000;    # tgtadm -C takes at most 32767
    my $host = $self->{opt}{guest} // '127.0.0.1';
    $self->{tgt_control} = $control;
    $self->{portals} = [map { "$host:$_" } @ports];
    $self->{portal} = $self->{portals}[0];
    $self->_spawn('tgtd', '-f', '-C', $control, '--iscsi', join(',', map { "portal=127.0.0.1:$_" } @ports));
    _wait_for("tgtd on control port $control", sub { system("tgtadm -C $control --mode system --op show >>$dir/tgtadm.log 2>&1") == 0 });

    # TLS and config
    _run_quiet('openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-days', '2', '-subj', '/CN=127.0.0.1',
        '-addext', 'subjectAltName=IP:127.0.0.1' . ($self->{opt}{guest} ? ",IP:$self->{opt}{guest}" : ''),
        '-keyout', "$dir/tls.key", '-out', "$dir/tls.crt");
    my $admin = 'pvs_admin_' . join('', map { ('a' .. 'z', 0 .. 9)[rand 36] } 1 .. 40);
    _write("$dir/admin.token", "$admin\n");
    my $port = _free_port();
    my $config = {
        listen => "127.0.0.1:$port",
        tls_cert => "$dir/tls.crt",
        tls_key => "$dir/tls.key",
        database => "sqlite:///$dir/state.db",
        admin_token_file => "$dir/admin.token",
        secret_key_file => "$dir/secret.key",
        portals => $self->{portals},
        target => { driver => 'tgt', control_port => $control },
        pools => [{ name => 'pool1', kind => 'file', options => { path => "$dir/mnt/pool" }, tags => ['ssd'] }],
        service_types => [{ name => 'default', default => JSON::PP::true }],
        reconcile_interval => 1,
        log_format => 'text',
        access_log => JSON::PP::false,
    };
    _write("$dir/service.yaml", JSON::PP->new->canonical->encode($config));    # JSON is YAML
    $self->_spawn_logged("$dir/service.log", $server, '--config', "$dir/service.yaml");
    $self->{api_url} = "https://127.0.0.1:$port";
    $self->{ca} = "$dir/tls.crt";
    $self->{admin_token} = $admin;
    _wait_for('pvesan-service', sub { $self->admin('health') });

    # any initiator, no CHAP: these tests drive the plugin's calls, not the tenant isolation
    $self->admin('tenant', 'create', 'cluster1', '--initiator', 'ALL', '--no-chap') or die "tenant create failed\n";
    my $tok = $self->admin('token', 'create', 'proxmox', '--for-tenant', 'cluster1') or die "token create failed\n";
    $self->{token} = $tok->{token};
}

sub _write {
    my ($file, $text) = @_;
    open(my $fh, '>', $file) or die "$file: $!";
    print $fh $text;
    close($fh);
    chmod 0600, $file;
}

sub _spawn {
    my ($self, @cmd) = @_;
    return $self->_spawn_logged('/dev/null', @cmd);
}

sub _spawn_logged {
    my ($self, $log, @cmd) = @_;
    my $pid = fork() // die "fork: $!";
    if (!$pid) {
        open(STDOUT, '>>', $log);
        open(STDERR, '>&', \*STDOUT);
        exec(@cmd) or POSIX::_exit(127);
    }
    push @{ $self->{pids} }, $pid;
    return $pid;
}

# pvesan CLI as the admin; decoded JSON or undef on failure.
sub admin {
    my ($self, @args) = @_;
    local $ENV{PVESAN_API_URL} = $self->{api_url};
    local $ENV{PVESAN_TOKEN} = $self->{admin_token};
    local $ENV{PVESAN_CA} = $self->{ca};
    local $ENV{PVESAN_CONFIG} = '/dev/null';
    my $out = qx($self->{cli} --json @{[ map { quotemeta } @args ]} 2>/dev/null);
    return undef if $? != 0;
    return $out =~ /\S/ ? decode_json($out) : {};
}

# Another tenant (create options as the CLI takes them, e.g. --chap-user/--chap-password) with
# a read-write token of its own; returns the token.
sub tenant_token {
    my ($self, $name, @create) = @_;
    $self->admin('tenant', 'create', $name, @create) or die "tenant create $name failed\n";
    my $tok = $self->admin('token', 'create', "$name-rw", '--for-tenant', $name) or die "token create failed\n";
    return $tok->{token};
}

# Targets tgtd really has (the data path's truth).
sub targets {
    my ($self) = @_;
    my $out = qx(tgtadm -C $self->{tgt_control} --lld iscsi --mode target --op show);
    return [ $out =~ /^Target \d+: (\S+)$/mg ];
}

sub stop {
    my ($self) = @_;
    return if $self->{stopped}++;
    # service first (it owns the targets), then tgtd with every target it still has
    for my $pid (reverse @{ $self->{pids} }) {
        if ($pid == $self->{pids}->[0]) {
            system("tgtadm -C $self->{tgt_control} --mode system --op update --name State -v offline >/dev/null 2>&1");
            system("tgtadm -C $self->{tgt_control} --mode system --op delete >/dev/null 2>&1");
        }
        kill('TERM', $pid);
        for (1 .. 100) { last if waitpid($pid, WNOHANG) == $pid; select(undef, undef, undef, 0.05); }
        kill('KILL', $pid) && waitpid($pid, 0);
    }
    unlink glob("/var/run/tgtd/socket.$self->{tgt_control}*") if $self->{tgt_control};
    system('umount', $self->{mounted}) if $self->{mounted};
    system('rm', '-rf', $self->{dir}) if $self->{dir};
}

sub DESTROY { $_[0]->stop(); }

1;
