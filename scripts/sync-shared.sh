#!/usr/bin/env bash
# The service runs copies of the collection's shared code: the iSCSI target libraries and the API
# client (plugins/module_utils/ is their one place; edit them there). This copies them into the
# service package, byte for byte; `make test` fails while a copy differs (service/tests/test_shared.py).
set -euo pipefail
cd "$(dirname "$0")/.."
for name in _tgt.py _lio.py _pvesan_client.py; do
    cmp -s "plugins/module_utils/$name" "service/src/pvesan_service/shared/$name" ||
        { cp "plugins/module_utils/$name" "service/src/pvesan_service/shared/$name" && echo "copied $name"; }
done
