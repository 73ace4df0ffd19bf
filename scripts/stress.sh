#!/usr/bin/env bash
# make stress: the long versions of the freshness suites, then docs/reliability.md.
#
#     STRESS_STEPS=10000 scripts/stress.sh     # steps of the property test per configuration
#
# Each configuration (sqlite/postgres x locmem/redis) runs the stateful property test for at
# least STRESS_STEPS steps (examples of STRESS_STEPS_PER_EXAMPLE steps), then the system suite
# (processes, faults) runs with FRESHCACHE_STRESS_ROUNDS rounds. Figures are appended to a
# report and rendered into docs/reliability.md by scripts/reliability_report.py.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/services.sh
. "$REPO_ROOT/scripts/services.sh"

steps="${STRESS_STEPS:-10000}"
per_example="${STRESS_STEPS_PER_EXAMPLE:-50}"
rounds="${STRESS_ROUNDS:-600}"
combos="${STRESS_COMBOS:-sqlite-locmem sqlite-redis postgres-locmem postgres-redis}"
report="$REPO_ROOT/build/stress.jsonl"
mkdir -p "$REPO_ROOT/build"
: >"$report"

"$REPO_ROOT/scripts/venv.sh" main
trap services_stop EXIT
services_install_missing
services_start
cd "$REPO_ROOT"
examples=$(((steps + per_example - 1) / per_example))
status=0
started="$(date +%s)"
for combo in $combos; do
    banner "property test: $combo ($examples examples x $per_example steps)"
    redis_flush
    FRESHCACHE_TEST_DB="${combo%-*}" FRESHCACHE_TEST_BACKEND="${combo#*-}" \
        FRESHCACHE_STRESS_EXAMPLES="$examples" FRESHCACHE_STRESS_STEPS="$per_example" \
        FRESHCACHE_STRESS_REPORT="$report" \
        .venv/bin/python -m pytest -q -s tests/test_freshness_property.py || status=1
done
banner "system suite: processes and faults ($rounds rounds)"
FRESHCACHE_TEST_DB=postgres FRESHCACHE_TEST_BACKEND=redis FRESHCACHE_STRESS_ROUNDS="$rounds" \
    FRESHCACHE_STRESS_REPORT="$report" \
    .venv/bin/python -m pytest -q -m system tests/ || status=1
.venv/bin/python scripts/reliability_report.py "$report" "$(($(date +%s) - started))" \
    "STRESS_STEPS=$steps STRESS_ROUNDS=$rounds make stress" >docs/reliability.md
cat docs/reliability.md
exit "$status"
