package PVE::Storage;

# Test double of pve-storage's PVE::Storage: only the API version constants the plugin reads.
# Tests set $PVE::Storage::TEST_APIVER / TEST_APIAGE to play a given Proxmox release
# (PVE 8.4: 11/2, 9.0: 12/3 .. 13/4, 9.1.6+: 15/6).

use strict;
use warnings;

our $TEST_APIVER = 11;
our $TEST_APIAGE = 2;

sub APIVER { return $TEST_APIVER; }
sub APIAGE { return $TEST_APIAGE; }

1;
