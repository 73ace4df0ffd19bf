#!/usr/bin/env bash
# Run one command with private PostgreSQL and Redis servers, then stop them:
#
#     scripts/with-services.sh .venv/bin/pytest tests/test_environment.py
#     scripts/with-services.sh bash            # (make services-shell)
#
# Exports FRESHCACHE_TEST_PG_HOST/PORT/USER/NAME, FRESHCACHE_TEST_REDIS_URL, the Redis
# Cluster's FRESHCACHE_TEST_CLUSTER_URL/NODES, the Sentinel setup's
# FRESHCACHE_TEST_SENTINEL_PORTS/SERVICE, and FRESHCACHE_TEST_DB=postgres /
# FRESHCACHE_TEST_BACKEND=redis unless already set.
# The command's exit status is this script's.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/services.sh
. "$REPO_ROOT/scripts/services.sh"

[[ $# -ge 1 ]] || die "usage: $0 COMMAND [ARGS...]"

trap services_stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

services_install_missing
services_start
export FRESHCACHE_TEST_DB="${FRESHCACHE_TEST_DB:-postgres}"
export FRESHCACHE_TEST_BACKEND="${FRESHCACHE_TEST_BACKEND:-redis}"
log "FRESHCACHE_TEST_DB=$FRESHCACHE_TEST_DB FRESHCACHE_TEST_BACKEND=$FRESHCACHE_TEST_BACKEND" \
    "PG 127.0.0.1:$FRESHCACHE_TEST_PG_PORT REDIS $FRESHCACHE_TEST_REDIS_URL"
rc=0
"$@" || rc=$?
exit "$rc"
