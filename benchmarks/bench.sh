#!/usr/bin/env bash
# `make bench`: private PostgreSQL + Redis, the driver's venv, then benchmarks/run.py.
#
#     benchmarks/bench.sh [run.py arguments]        # e.g. --quick, --long, --libs none,freshcache
#     benchmarks/bench.sh --backend cluster [--quick] # freshcache on the Redis Cluster
#
# The servers are the test suite's (scripts/services.sh: PostgreSQL, a Redis, a 3-primary
# Redis Cluster, Sentinel): loopback only, stopped on exit. When FRESHCACHE_TEST_PG_HOST and
# FRESHCACHE_TEST_REDIS_URL (and, with --backend cluster, FRESHCACHE_TEST_CLUSTER_URL) are
# already set (e.g. inside `make services-shell`) those servers are used instead and left
# running.
#
# .venv-bench holds freshcache from this repo (editable), Django 5.2, psycopg, hiredis and
# matplotlib; it is the driver's venv and the one the "no cache" and freshcache runs use.
# The peers' venvs are made by run.py. Every venv is skipped when its stamp is current.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
# shellcheck source=scripts/services.sh
. "$REPO_ROOT/scripts/services.sh"

BENCH_PYTHON_VERSION=3.11
BENCH_DJANGO_SPEC="Django>=5.2,<5.3"
venv="$REPO_ROOT/.venv-bench"

base_python="$(find_python "$BENCH_PYTHON_VERSION")" ||
    die "no Python $BENCH_PYTHON_VERSION found (set FRESHCACHE_PYTHON_${BENCH_PYTHON_VERSION//./_})"
export BENCH_BASE_PYTHON="$base_python"
export BENCH_DJANGO_SPEC

# --- the driver's venv ---------------------------------------------------------------------
requirements=(-e "$REPO_ROOT" "$BENCH_DJANGO_SPEC" "psycopg[binary]>=3.1" "hiredis>=2.0" "matplotlib>=3.8")
stamp="$(
    {
        echo "python=$base_python"
        printf '%s\n' "${requirements[@]}"
        sha256sum "$REPO_ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | awk '{ print $1 }'
    } | sha256sum | awk '{ print $1 }'
)"
if [[ ! -f "$venv/.bench-stamp" || "$(cat "$venv/.bench-stamp")" != "$stamp" ]] ||
    ! "$venv/bin/python" -c '' 2>/dev/null; then
    start="$(now)"
    log "bench: installing .venv-bench (Python $BENCH_PYTHON_VERSION, $BENCH_DJANGO_SPEC, matplotlib) ..."
    "$venv/bin/python" -c '' 2>/dev/null || {
        rm -rf "$venv"
        "$base_python" -m venv "$venv"
    }
    rm -f "$venv/.bench-stamp"
    if ! "$venv/bin/python" -m pip install --progress-bar off --upgrade "${requirements[@]}" \
        >"$venv/pip-install.log" 2>&1; then
        cat "$venv/pip-install.log" >&2
        die "bench: pip install failed (log above)"
    fi
    echo "$stamp" >"$venv/.bench-stamp"
    log "bench: .venv-bench ready in $(elapsed "$start")s"
fi

# --- servers -------------------------------------------------------------------------------
need_cluster=""
prev=""
for arg in "$@"; do
    [[ "$arg" == --backend=cluster || ("$prev" == --backend && "$arg" == cluster) ]] &&
        need_cluster=1
    prev="$arg"
done
if [[ -n "${FRESHCACHE_TEST_PG_HOST:-}" && -n "${FRESHCACHE_TEST_REDIS_URL:-}" &&
    (-z "$need_cluster" || -n "${FRESHCACHE_TEST_CLUSTER_URL:-}") ]]; then
    log "bench: using the servers named by FRESHCACHE_TEST_PG_*, FRESHCACHE_TEST_REDIS_URL" \
        "${need_cluster:+and FRESHCACHE_TEST_CLUSTER_URL}"
else
    trap services_stop EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    services_install_missing
    services_start
fi

cd "$REPO_ROOT"
rc=0
"$venv/bin/python" -m benchmarks.run "$@" || rc=$?
exit "$rc"
