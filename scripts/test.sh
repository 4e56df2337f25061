#!/usr/bin/env bash
# The whole test suite behind `make test`: every stage runs, one summary at the end, non-zero
# exit if any stage failed. `scripts/test.sh <stage>...` runs only the named stages.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
# shellcheck source=scripts/env.sh
source scripts/env.sh

# Extra arguments for ansible-test (make sanity TEST_ARGS="--test pylint plugins/modules/x.py").
read -ra extra_args <<<"${TEST_ARGS:-}"

all_stages=(changelog build sanity units integration service plugin lint molecule molecule-host-roles molecule-ha)
stages=("$@")
((${#stages[@]})) || stages=("${all_stages[@]}")
# The HA scenario (then host_roles) mostly waits for its containers and its cluster, so when it
# runs with other stages it runs beside them, one after the other in a second lane, each with its
# output kept in a log that is printed when the lane ends. PVESAN_TEST_SERIAL=1 runs every stage
# in turn.
background=()
if [[ ${PVESAN_TEST_SERIAL:-0} != 1 ]] && ((${#stages[@]} > 1)); then
    for s in molecule-ha molecule-host-roles; do
        [[ " ${stages[*]} " == *" $s "* ]] && background+=("$s")
    done
    ((${#background[@]} < ${#stages[@]})) || background=()
fi

# ansible-test wants the collection as a real directory under ansible_collections/: give it a
# fresh copy of the files git would see (tracked and untracked, minus ignored ones).
sync_test_tree() {
    local dest=$root/.cache/ansible-test/ansible_collections/pvesan/storage
    # tests/output survives: ansible-test keeps its virtual environments there.
    mkdir -p "$dest/tests"
    find "$dest" -mindepth 1 -maxdepth 1 ! -name tests -exec rm -rf {} +
    find "$dest/tests" -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {} +
    git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
        [[ -e $f || -L $f ]] && printf '%s\0' "$f"
    done | tar --null -T - -cf - | tar -C "$dest" -xf -
    cd "$dest" || return 1
    # Its own (empty) git repository, or ansible-test would ask the checkout's git for the file
    # list and find nothing under the ignored .cache/.
    git init -q .
}

stage_changelog() { antsibull-changelog lint; }

stage_build() {
    # Only the built tarball may provide pvesan.storage here, not the checkout.
    local -x PYTHONPATH='' ANSIBLE_COLLECTIONS_PATH=$root/.cache/build/collections
    local out=$root/.cache/build
    rm -rf "$out" && mkdir -p "$out/collections"
    ansible-galaxy collection build --force --output-path "$out" &&
        ansible-galaxy collection install --offline --force -p "$out/collections" "$out"/pvesan-storage-*.tar.gz &&
        ansible-doc -l pvesan.storage | tee "$out/doc-list.txt" &&
        local modules && modules=$(awk '{print $1}' "$out/doc-list.txt") &&
        [[ -n $modules ]] &&
        for m in $modules; do
            ansible-doc "$m" >/dev/null || { echo "ansible-doc $m failed"; return 1; }
        done &&
        echo "built, installed and rendered docs for: $(echo "$modules" | tr '\n' ' ')" &&
        ansible-doc -t role -l pvesan.storage &&
        for r in $(ansible-doc -t role -l pvesan.storage | awk '{print $1}'); do
            ansible-doc -t role "$r" >/dev/null || { echo "ansible-doc -t role $r failed"; return 1; }
        done
}

# Every Python this machine has (pyenv keeps 3.8 ... 3.13 beside the system's 3.11) on PATH
# under its pythonX.Y name, so compile/import sanity covers the whole target range of the modules
# that are present; ansible-test skips the versions it does not find.
python_versions_on_path() {
    local dir=$root/.cache/pythons version
    mkdir -p "$dir"
    for version in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.*; do
        [[ -x $version/bin/python3 ]] || continue
        version=${version%/}
        local minor=${version##*/}
        minor=${minor%.*}
        ln -sfn "$version/bin/python$minor" "$dir/python$minor"
    done
    PATH=$dir:$PATH
}

stage_sanity() {
    (python_versions_on_path && sync_test_tree && ansible-test sanity --venv --color no "${extra_args[@]}")
}

stage_units() {
    (sync_test_tree && ansible-test units --local --python 3.11 --color no "${extra_args[@]}")
}

stage_integration() {
    compgen -G "tests/integration/targets/*/" >/dev/null || { echo "no integration targets yet"; return 0; }
    (sync_test_tree && ansible-test integration --local --python 3.11 --color no --allow-destructive "${extra_args[@]}")
}

stage_service() {
    [[ -d service/tests ]] || { echo "no service tests"; return 0; }
    python -m pytest service/tests -q -p no:cacheprovider
}

stage_plugin() {
    [[ -d tests/perl ]] || { echo "no Proxmox plugin tests yet"; return 0; }
    prove -r tests/perl
}

stage_lint() { ansible-lint --profile production; }

# default: the full stack (the lab).
stage_molecule() { molecule test -s default; }

# host_roles: transport encryption, multipath and host tuning with the TLS capture test and the
# ipsec/none switch-over.
stage_molecule-host-roles() { molecule test -s host_roles; }

stage_molecule-ha() { molecule test -s ha; }

# Stages that share a directory under .cache/ (the synced ansible-test tree, the build output)
# take a lock, so that several developers or shells on one machine do not trample each other.
locked() {
    local fd rc
    mkdir -p "$root/.cache"
    exec {fd}>"$root/.cache/$1.lock"
    flock "$fd"
    "${@:2}"
    rc=$?
    exec {fd}>&-
    return "$rc"
}

declare -A result seconds
run_stage() {
    local s=$1 start=$SECONDS runner
    case $s in
    sanity | units | integration) runner=(locked ansible-test "stage_$s") ;;
    build) runner=(locked build "stage_$s") ;;
    *) runner=("stage_$s") ;;
    esac
    if "${runner[@]}"; then result[$s]=passed; else result[$s]=FAILED; fi
    seconds[$s]=$((SECONDS - start))
}

# The second lane: its stages in turn, each result in a file (the lane is a subshell).
lane_log=$root/.cache/test-logs
mkdir -p "$lane_log"
lane_pid=
if ((${#background[@]})); then
    printf '\n========== %s (a second lane beside the other stages; logs in %s) ==========\n' "${background[*]}" "$lane_log"
    (
        for s in "${background[@]}"; do
            run_stage "$s" >"$lane_log/$s.log" 2>&1
            echo "${result[$s]} ${seconds[$s]}" >"$lane_log/$s.result"
        done
    ) &
    lane_pid=$!
fi
for s in "${stages[@]}"; do
    [[ " ${background[*]} " == *" $s "* ]] && continue
    printf '\n========== %s ==========\n' "$s"
    run_stage "$s"
done
if [[ -n $lane_pid ]]; then
    wait "$lane_pid"
    for s in "${background[@]}"; do
        printf '\n========== %s (its log) ==========\n' "$s"
        cat "$lane_log/$s.log"
        lane_result=FAILED lane_seconds=0
        read -r lane_result lane_seconds <"$lane_log/$s.result" 2>/dev/null
        result[$s]=$lane_result seconds[$s]=$lane_seconds
        rm -f "$lane_log/$s.result"
    done
fi

passed=0 failed=0
printf '\n========== summary ==========\n'
for s in "${stages[@]}"; do
    printf '%-20s %-7s %5ss\n' "$s" "${result[$s]}" "${seconds[$s]}"
    [[ ${result[$s]} == passed ]] && passed=$((passed + 1)) || failed=$((failed + 1))
done
echo "stages: $passed passed, $failed failed"
((failed == 0))
