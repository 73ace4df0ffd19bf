#!/usr/bin/env bash
# Run the test suite on every leg (Python x Django) and combination (database x backend).
#
#     scripts/test-matrix.sh [--lint]
#
# Legs (venvs are created/updated on demand by scripts/venv.sh):
#     main   .venv       Python 3.11, Django 5.2.x   all four combinations
#     dj42   .venv-dj42  Python 3.10, Django 4.2.x   EXTRA_COMBOS
#     dj6    .venv-dj6   Python 3.13, Django 6.x     EXTRA_COMBOS
# Combinations: sqlite-locmem sqlite-redis postgres-locmem postgres-redis (PostgreSQL ones
# marked +prepared run with psycopg prepared statements allowed: see run_combo).
#
# Environment knobs (all optional; `make test VAR=...` passes them through):
#     LEGS          legs to run, e.g. "main" (default: "main dj42 dj6")
#     COMBOS        combinations for every leg, or "all" (default: all on main,
#                   EXTRA_COMBOS on the others)
#     EXTRA_COMBOS  combinations on dj42/dj6 (default: "sqlite-locmem postgres-redis";
#                   "all" runs the four; `make test-full` does that)
#     PYTEST_ARGS   extra pytest arguments, e.g. "-x -k stamps"
#
# Private PostgreSQL and Redis servers (a single Redis, a 3-primary Redis Cluster and a
# Sentinel setup: scripts/services.sh) are started once per run (installed with apt-get first
# if missing) and stopped on exit, also on failure or Ctrl-C.  Every leg and combination runs even when an earlier one failed; the exit
# status is non-zero if lint (with --lint) or any combination failed, pytest's exit 5
# ("no tests collected") included.  The last line is "tests: N passed, N failed, N skipped"
# summed over all combinations.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/services.sh
. "$REPO_ROOT/scripts/services.sh"

ALL_COMBOS=(sqlite-locmem sqlite-redis postgres-locmem postgres-redis)

run_lint=""
for arg in "$@"; do
    case "$arg" in
        --lint) run_lint=1 ;;
        *) die "usage: $0 [--lint]" ;;
    esac
done

read -ra legs <<<"${LEGS:-${ALL_LEGS[*]}}"
read -ra pytest_args <<<"${PYTEST_ARGS:-}"

# resolve_combos LEG: set the global array `combos` to the combinations to run on LEG
# ("all" expands to the four; unknown names are an error).
resolve_combos() {
    local -a words
    local w
    if [[ -n "${COMBOS:-}" ]]; then
        read -ra words <<<"$COMBOS"
    elif [[ "$1" == main ]]; then
        words=(all)
    else
        read -ra words <<<"${EXTRA_COMBOS:-sqlite-locmem postgres-redis}"
    fi
    combos=()
    for w in "${words[@]}"; do
        if [[ "$w" == all ]]; then
            combos+=("${ALL_COMBOS[@]}")
        elif [[ " ${ALL_COMBOS[*]} " == *" $w "* ]]; then
            combos+=("$w")
        else
            die "unknown combination '$w' (known: ${ALL_COMBOS[*]} all)"
        fi
    done
}

# ---------------------------------------------------------------------------
# results, summary, cleanup
# ---------------------------------------------------------------------------
summary_lines=()
failures=0
total_passed=0
total_failed=0
total_skipped=0
run_start="$(now)"
reports_dir="$(mktemp -d "${TMPDIR:-/tmp}/freshcache-reports.XXXXXX")"
echo "$$" >"$reports_dir/owner.pid" # lets reap_stale_services clean up after a kill -9

# record STATUS LABEL DETAIL
record() {
    summary_lines+=("$(printf '%-4s  %-46s %s' "$1" "$2" "$3")")
    [[ "$1" == PASS ]] || failures=$((failures + 1))
}

print_summary() {
    banner "summary"
    local line
    for line in "${summary_lines[@]}"; do
        echo "$line"
    done
    if [[ $failures -eq 0 ]]; then
        echo "result: all ${#summary_lines[@]} steps passed in $(elapsed "$run_start")s"
    else
        echo "result: FAILED ($failures of ${#summary_lines[@]} steps failed) in $(elapsed "$run_start")s"
    fi
    # Last line, in the plain format CI reads: totals over every combination.
    echo "tests: $total_passed passed, $total_failed failed, $total_skipped skipped"
}

# The setup step in progress; if the script dies in it (die, set -e), on_exit records it.
current_step="plan"

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -z "$current_step" || $rc -eq 0 ]] || record FAIL "$current_step" "aborted (exit $rc)"
    services_stop
    rm -rf "$reports_dir"
    print_summary
    [[ $failures -eq 0 ]] || rc=1
    exit "$rc"
}
trap on_exit EXIT
trap 'current_step=""; record FAIL "interrupted" "(signal)"; exit 130' INT
trap 'current_step=""; record FAIL "terminated" "(signal)"; exit 143' TERM

# ---------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------
banner "plan"
need_services=""
for leg in "${legs[@]}"; do
    venv="$(leg_venv "$leg")" || exit 1 # also validates the leg name
    resolve_combos "$leg"
    need_services=1 # every run needs them: the contract and system suites use real servers
    echo "$leg: Python $(leg_python_version "$leg"), $(leg_django_spec "$leg"), ${venv##*/}: ${combos[*]}"
done
[[ -n "$run_lint" ]] && echo "lint: ruff check, ruff format --check, mypy (in .venv)"
current_step=""

# ---------------------------------------------------------------------------
# system packages, main venv, lint
# ---------------------------------------------------------------------------
if [[ -n "$need_services" ]]; then
    banner "system packages"
    current_step="system packages"
    services_install_missing
    log "redis-server and PostgreSQL $(basename "$(dirname "$(pg_bindir)")") present"
    current_step=""
fi

if [[ -n "$run_lint" ]]; then
    banner "lint"
    step_start="$(now)"
    if "$REPO_ROOT/scripts/venv.sh" main && "$REPO_ROOT/scripts/lint.sh"; then
        record PASS "lint" "($(elapsed "$step_start")s)"
    else
        record FAIL "lint" "($(elapsed "$step_start")s)"
    fi
fi

if [[ -n "$need_services" ]]; then
    banner "services"
    current_step="services"
    services_start
    current_step=""
fi

# ---------------------------------------------------------------------------
# legs x combinations
# ---------------------------------------------------------------------------
# run_combo LEG LABEL COMBO MARKER: run pytest once on the tests MARKER selects, record the
# outcome. Tests marked "system" start their own processes and servers and do not depend on
# the combination: they run once per leg (on postgres + redis), the others in every one.
run_combo() {
    local leg="$1" label="$2" combo="$3" marker="$4"
    local db="${combo%-*}" backend="${combo#*-}"
    local name="$combo" prepare=""
    [[ "$marker" == system ]] && name="system"
    # Some PostgreSQL runs let psycopg prepare statements (OPTIONS["prepare_threshold"]),
    # which sends freshcache's guarded writes as prepared statements; the rest keep Django's
    # default: postgres-locmem on every leg and postgres-* on dj6 (Django 6) are prepared.
    if [[ "$db" == postgres && "$marker" != system ]] &&
        [[ "$backend" == locmem || "$leg" == dj6 ]]; then
        prepare=1
        name="$name+prepared"
    fi
    local report="$reports_dir/$leg-$name.xml"
    local rc=0 start detail counts
    banner "$label :: $db + $backend :: -m '$marker'"
    [[ "$backend" == redis ]] && redis_flush
    start="$(now)"
    (
        cd "$REPO_ROOT"
        FRESHCACHE_TEST_DB="$db" FRESHCACHE_TEST_BACKEND="$backend" \
            FRESHCACHE_TEST_PG_PREPARE="$prepare" \
            "$(leg_venv "$leg")/bin/python" -m pytest --junitxml="$report" -m "$marker" \
            ${pytest_args[@]+"${pytest_args[@]}"}
    ) || rc=$?

    if counts="$("$(any_python)" "$REPO_ROOT/scripts/junit_summary.py" "$report" 2>/dev/null)"; then
        local p f s
        read -r p f s <<<"$counts"
        total_passed=$((total_passed + p))
        total_failed=$((total_failed + f))
        total_skipped=$((total_skipped + s))
        detail="$p passed, $f failed, $s skipped"
    else
        detail="no report"
    fi
    detail="$detail ($(elapsed "$start")s)"
    case "$rc" in
        0) record PASS "$label $name" "$detail" ;;
        5) record FAIL "$label $name" "NO TESTS COLLECTED (pytest exit 5) $detail" ;;
        *) record FAIL "$label $name" "pytest exit $rc: $detail" ;;
    esac
}

for leg in "${legs[@]}"; do
    banner "leg $leg: setup"
    step_start="$(now)"
    if ! "$REPO_ROOT/scripts/venv.sh" "$leg"; then
        record FAIL "$leg" "venv setup failed, leg skipped ($(elapsed "$step_start")s)"
        continue
    fi
    versions="$("$(leg_venv "$leg")/bin/python" -c \
        'import sys, django; print(f"py{sys.version.split()[0]} dj{django.get_version()}")')"
    label="$leg [$versions]"
    resolve_combos "$leg"
    for combo in "${combos[@]}"; do
        run_combo "$leg" "$label" "$combo" "not system"
    done
    run_combo "$leg" "$label" "postgres-redis" "system"
done
# on_exit prints the summary and sets the exit status.
