#!/usr/bin/env bash
# The id of one version of the service source (the directory given): a hash of every file the
# service is built from, the copies of the collection's shared code in src/pvesan_service/shared/
# included. A new id reinstalls the service on the storage hosts.
set -euo pipefail
cd "$1"
find pyproject.toml src \( -type f -o -type l \) ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
