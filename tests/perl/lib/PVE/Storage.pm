package PVE::Storage;

# Test double of pve-storage's PVE::Storage: the API version constants and config(), the parts
# the plugin reads. Tests set $PVE::Storage::TEST_APIVER / TEST_APIAGE to play a given Proxmox
# release (PVE 8.4: 11/2, 9.0: 12/3 .. 13/4, 9.1.6+: 15/6) and $TEST_CONFIG to the parsed
# storage.cfg ({ ids => { <storeid> => $scfg } }).

use strict;
use warnings;

our $TEST_APIVER = 11;
our $TEST_APIAGE = 2;

our $TEST_CONFIG = { ids => {} };

sub APIVER { return $TEST_APIVER; }
sub config { return $TEST_CONFIG; }
sub APIAGE { return $TEST_APIAGE; }

1;
