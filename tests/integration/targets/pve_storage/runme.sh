#!/usr/bin/env bash
# A script target rather than a role target: a role target named pve_storage would be
# shadowed by the collection's own role pvesan.storage.pve_storage.
set -eux
ANSIBLE_ROLES_PATH=../ ansible-playbook -i ../../inventory playbook.yml "$@"
