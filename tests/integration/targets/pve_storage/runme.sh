#!/usr/bin/env bash
# A script target rather than a role target: a role target named pve_storage would be
# shadowed by the collection's own role pvesan.storage.pve_storage.
set -eux
ANSIBLE_ROLES_PATH=../ ansible-playbook -i ../../inventory playbook.yml "$@"

# A secret inside `options` never appears in the output, not even at -vvv (module args included).
set +x
rc=0
out=$(ANSIBLE_ROLES_PATH=../ ansible-playbook -i ../../inventory secret_in_options.yml -vvv "$@" 2>&1) || rc=$?
if grep -q 'S3cr3t-in-options-0123' <<<"$out"; then
    echo "the secret given in options was echoed:"
    grep -n 'S3cr3t-in-options-0123' <<<"$out"
    exit 1
fi
if [ "$rc" != 0 ] || ! grep -q 'failed=0 .* ignored=1' <<<"$out"; then echo "$out"; exit 1; fi
echo "secret masked in $(wc -l <<<"$out") lines of -vvv output"
