#!/usr/bin/env bash
# A script target rather than a role target: a role target of this name could be shadowed by a
# role of the collection with the same name.
set -eux
ansible-playbook -i ../../inventory playbook.yml "$@"
