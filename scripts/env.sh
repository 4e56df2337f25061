# Environment shared by the Makefile's scripts (sourced, not run).
# shellcheck shell=bash
root=${root:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export PATH="$root/.venv/bin:$PATH"
export VIRTUAL_ENV="$root/.venv"
# The lab's podman settings (runc, lowered ulimits): see lab/containers.conf.
export CONTAINERS_CONF="$root/lab/containers.conf"
# The checkout as pvesan.storage; the collections bundled in the `ansible` package are found on
# sys.path by ansible-core itself.
export ANSIBLE_COLLECTIONS_PATH="$root/.cache/collections"
export PYTHONPATH="$root/.cache/collections${PYTHONPATH:+:$PYTHONPATH}"
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
