package PVE::RADOS;

# Stand-in for librados2-perl's PVE::RADOS (XS over librados). pve-storage loads it for its
# rbd/cephfs plugins; the dev-time check never talks to Ceph, so any use of it dies.

use strict;
use warnings;

sub new { die "PVE::RADOS stand-in: there is no Ceph cluster in the dev-time check\n"; }

1;
