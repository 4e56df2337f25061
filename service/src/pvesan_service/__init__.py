"""pvesan volume/target service: thin volumes, snapshots and clones exported over iSCSI."""
__version__ = "0.1.0"
