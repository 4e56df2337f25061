# pvesan.storage developer commands. Two matter on a fresh machine:
#   make setup   - Debian packages, .venv with the pinned tools, lab image (cached)
#   make test    - the whole suite, one summary, non-zero exit on any failure
SHELL := /bin/bash
.DEFAULT_GOAL := help
RUN := source scripts/env.sh &&

.PHONY: sync-shared help setup test sanity units integration service-tests plugin-tests lint build molecule molecule-host-roles molecule-ha changelog lab lab-destroy lab-ha bench-ha bench kernel-vm kernel-vm-record kernel-vm-lio kernel-vm-thin kernel-vm-plugin kernel-vm-ha-pools proxmox-check proxmox-facts

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

setup: ## install everything a fresh Debian 12 machine needs (idempotent, seconds when done)
	bash scripts/setup.sh

test: ## run the whole suite (sanity, units, integration, service, plugin, lint, build, molecule; molecule-ha and molecule-host-roles beside them)
	bash scripts/test.sh

sanity: ## ansible-test sanity (all tests that run here); TEST_ARGS="--test pylint plugins/modules/x.py"
	TEST_ARGS="$(TEST_ARGS)" bash scripts/test.sh sanity

units: ## ansible-test units; TEST_ARGS="tests/unit/plugins/modules/test_x.py"
	TEST_ARGS="$(TEST_ARGS)" bash scripts/test.sh units

integration: ## ansible-test integration targets; TEST_ARGS="<target>"
	TEST_ARGS="$(TEST_ARGS)" bash scripts/test.sh integration

service-tests: ## pytest suite of the bundled volume service
	bash scripts/test.sh service

plugin-tests: ## tests of the Proxmox Perl plugin
	bash scripts/test.sh plugin

lint: ## ansible-lint, production profile
	bash scripts/test.sh lint

sync-shared: ## copy the shared code (module_utils/_tgt, _lio, _pvesan_client) into the service package
	bash scripts/sync-shared.sh

build: ## build the collection tarball, install it, render every module's docs
	bash scripts/test.sh build

changelog: ## antsibull-changelog lint
	bash scripts/test.sh changelog

molecule: ## molecule test of the lab scenario default (create, converge, idempotence, smoke, verify, destroy)
	bash scripts/test.sh molecule

molecule-host-roles: ## molecule test of the host_roles scenario (transport encryption, multipath, host tuning)
	bash scripts/test.sh molecule-host-roles

molecule-ha: ## molecule test of the HA scenario (two heads under Pacemaker, converged twice, failover drills)
	bash scripts/test.sh molecule-ha

lab: ## bring up the lab, converge playbooks/site.yml, run the smoke test and verify; leaves it up
	bash scripts/lab.sh up

lab-destroy: ## remove the lab's containers and networks
	bash scripts/lab.sh destroy

lab-ha: ## bring up the HA lab (two storage heads under Pacemaker, one Proxmox-like node) and converge it; leaves it up
	bash scripts/lab.sh up-ha

bench-ha: ## failover drills on the HA lab, ten of each kind, figures for docs/performance.md (runs make lab-ha first)
	bash scripts/lab.sh up-ha && source scripts/env.sh && python3 bench/ha_failover.py --rounds $${ROUNDS:-10} --json .cache/ha-failover.json

kernel-vm: ## build the cached kernel VM image (Debian kernel + ZFS + LVM + open-iscsi under qemu TCG); optional
	bash scripts/kernel-vm.sh build

kernel-vm-record: ## re-record real zpool/zfs/lvm/iscsiadm output in the kernel VM; SECTIONS="zfs_pool zfs lvmthin iscsi"
	bash scripts/kernel-vm.sh record $(SECTIONS)

kernel-vm-lio: ## the service's lio driver against the kernel VM's real LIO target and initiator; optional
	bash scripts/kernel-vm.sh lio

kernel-vm-thin: ## thin provisioning on zfs/lvmthin pools through tgt and LIO in the kernel VM (discard, zeros, full pool); optional
	bash scripts/kernel-vm.sh thin

kernel-vm-plugin: ## the Proxmox plugin's kernel-initiator path (CHAP, multipath) in the kernel VM against a real service; optional
	bash scripts/kernel-vm.sh plugin

kernel-vm-ha-pools: ## storage_ha's ZFS and LVM-activate pool resources on two kernel VMs sharing disks; optional
	bash scripts/kernel-vm.sh ha-pools

proxmox-check: ## the plugin under Proxmox VE 9.1's own code (pve-storage, qemu-server) against a real service; optional, needs the sources (docs/development.md)
	bash scripts/proxmox-check.sh all

proxmox-facts: ## re-record the facts of Proxmox's own code that make test uses (fixtures/proxmox/pve-*.json); optional
	bash scripts/proxmox-check.sh facts
