#!/usr/bin/env bash
# `make lab`: the lab (molecule's default scenario) brought up, converged with
# playbooks/site.yml, smoke-tested and verified, then left running for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh

case ${1:-up} in
up)
    echo "== lab: create storage1, pve1, pve2 and converge playbooks/site.yml"
    molecule converge --scenario-name default
    echo "== lab: smoke test (data written on pve1, read back on pve2 through iSCSI)"
    molecule side-effect --scenario-name default
    echo "== lab: verify (testinfra)"
    molecule verify --scenario-name default
    echo
    echo "lab is up:"
    podman ps --filter label=project=pvesan-lab --format '  {{.Names}}  {{.Status}}'
    echo "  enter a host: podman exec -it pve1 bash     remove it: make lab-destroy"
    ;;
up-ha)
    echo "== HA lab: create ha-storage1, ha-storage2, ha-pve1 and converge playbooks/site.yml (pvesan_storage_ha)"
    molecule converge --scenario-name ha
    podman exec ha-storage1 crm_mon --one-shot
    echo "  drills: python3 bench/ha_failover.py --rounds 1     remove it: make lab-destroy"
    ;;
destroy)
    molecule destroy --scenario-name default
    molecule destroy --scenario-name ha
    ;;
*)
    echo "usage: $0 up|up-ha|destroy" >&2
    exit 2
    ;;
esac
