# Runs on the host (scripts/kernel-vm.sh plugin): a real pvesan-service and tgtd for the kernel VM,
# then the plugin's kernel-initiator test inside the VM (tests/kernel-vm/plugin.t), then the
# service is stopped again. The VM reaches this host's loopback as 10.0.2.2 (qemu user network),
# so the service exports its two portals under that address.
use strict;
use warnings;
use Cwd qw(abs_path);
use FindBin;
use lib abs_path("$FindBin::Bin/../perl/lib");    # PVESANTest::Service finds the checkout from its own path
use File::Copy qw(copy);
use JSON::PP;
use Test::More;

use PVESANTest::Service qw(start_service);

my ($root, $run) = @ARGV;
die "usage: plugin-host.pl <checkout> <run dir>\n" if !$run;
my $vm = "$root/scripts/kernel-vm.sh";
chomp(my $guest_iqn = qx('$vm' ssh "sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi"));
die "the VM has no initiator name\n" if $guest_iqn !~ /^iqn\./;

my $svc = start_service(guest => '10.0.2.2', portals => 2);
my $secret = sub { join('', map { ('a' .. 'z', 0 .. 9)[rand 36] } 1 .. 24) };
my %env = (chap_password => 'chap-' . $secret->(), mutual_password => 'mutual-' . $secret->());
# the tenant as the volume_service role makes it: CHAP (here with mutual CHAP) and an ACL of the node
$env{token} = $svc->tenant_token('kvm', '--initiator', $guest_iqn, '--chap-user', 'kvm-node',
    '--chap-password', $env{chap_password}, '--mutual-user', 'kvm-target', '--mutual-password', $env{mutual_password});
($env{port}) = $svc->{api_url} =~ /:(\d+)$/;
$env{api_url} = "https://10.0.2.2:$env{port}";
$env{portals} = $svc->{portals};
$env{guest_iqn} = $guest_iqn;
copy($svc->{ca}, "$run/plugin-ca.crt") or die "copy: $!";
$env{ca} = "$run/plugin-ca.crt";
open(my $fh, '>', "$run/plugin-env.json") or die;
print $fh encode_json(\%env);
close($fh);

my $rc = system($vm, 'ssh', "cd '$root' && PVESAN_KVM_ENV='$run/plugin-env.json' prove -v tests/kernel-vm/plugin.t");
ok($rc == 0, 'the plugin\'s kernel-initiator test in the VM passed');
$svc->stop();
unlink("$run/plugin-env.json", "$run/plugin-ca.crt");
done_testing();
