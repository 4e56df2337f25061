#!/usr/bin/env bash
# A script target rather than a role target, like the others: a role target of this name could be
# shadowed by a role of the collection with the same name.
set -eux
ansible-playbook -i ../../inventory playbook.yml "$@"

# The fence device password never appears in the output, not even at -vvv (module args, diff and
# patch included), neither on success nor when crm_verify refuses the configuration.
set +x
rc=0
out=$(ansible-playbook -i ../../inventory secret_in_output.yml -vvv --diff "$@" 2>&1) || rc=$?
if grep -q 'Fence-S3cret-0123' <<<"$out"; then
    echo "the fence password was echoed:"
    grep -n 'Fence-S3cret-0123' <<<"$out"
    exit 1
fi
if [ "$rc" != 0 ] || ! grep -q 'failed=0 .* ignored=1' <<<"$out"; then echo "$out"; exit 1; fi
echo "fence password masked in $(wc -l <<<"$out") lines of -vvv output"
