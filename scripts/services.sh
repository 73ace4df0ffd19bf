# shellcheck shell=bash
# Private Redis (single, Cluster, Sentinel) and PostgreSQL servers for a test run.
# Source it after lib.sh:
#
#     services_install_missing     # apt-get install redis-server / postgresql if absent
#     services_start               # start both, export FRESHCACHE_TEST_* variables
#     services_stop                # stop both, remove the temp dir (idempotent)
#
# Both servers listen on free loopback ports only (127.0.0.1), keep everything in one
# temp dir under ${TMPDIR:-/tmp}, and are stopped by services_stop, which callers run from
# an EXIT trap.  Nothing here touches a system-wide Redis or PostgreSQL.
#
# Exported by services_start:
#     FRESHCACHE_TEST_PG_HOST=127.0.0.1  FRESHCACHE_TEST_PG_PORT  FRESHCACHE_TEST_PG_USER=postgres
#     FRESHCACHE_TEST_PG_NAME=freshcache  FRESHCACHE_TEST_REDIS_URL=redis://127.0.0.1:PORT/0
#     FRESHCACHE_TEST_CLUSTER_URL  FRESHCACHE_TEST_CLUSTER_NODES  (a 3-primary Redis Cluster)
#     FRESHCACHE_TEST_SENTINEL_PORTS  FRESHCACHE_TEST_SENTINEL_SERVICE  (primary, replica, 3 sentinels)
#     FRESHCACHE_SERVICES_DIR (the temp dir; logs are in it)

FRESHCACHE_SERVICES_DIR="${FRESHCACHE_SERVICES_DIR:-}"
_REDIS_PID=""
_PG_STARTED=""
_POLICY_RC_CREATED=""

# Name of the unprivileged account PostgreSQL runs as when we are root.
PG_OS_USER="${FRESHCACHE_PG_OS_USER:-postgres}"

_as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

# pg_bindir: newest /usr/lib/postgresql/<version>/bin that has initdb.
pg_bindir() {
    local dir
    dir="$(
        find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
            sort -V | tail -n 1
    )"
    [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]] || return 1
    echo "$dir"
}

_have_redis() { command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; }

# services_install_missing: apt-get install the servers that are not on the machine.
# `apt-get update` runs only when something has to be installed.
services_install_missing() {
    local -a missing=()
    _have_redis || missing+=(redis-server redis-tools)
    pg_bindir >/dev/null || missing+=(postgresql)
    [[ ${#missing[@]} -eq 0 ]] && return 0

    local start
    start="$(now)"
    log "installing missing system packages: ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found; install ${missing[*]} by hand"

    # Keep the packages' maintainer scripts from starting their system-wide services
    # (a Redis on 6379, a PostgreSQL cluster on 5432): we run our own.  Docker-style
    # machines already have a policy-rc.d that says so; otherwise put one in place for
    # the duration of the install (removed by _policy_rc_remove, also from the EXIT trap).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        _as_root sh -c 'printf "#!/bin/sh\n# freshcache: temporary, deny service starts\nexit 101\n" >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
        _POLICY_RC_CREATED=1
    fi

    local rc=0
    {
        _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}"
    } || rc=$?
    _policy_rc_remove
    [[ $rc -eq 0 ]] || die "apt-get install ${missing[*]} failed (exit $rc)"
    _have_redis || die "redis-server/redis-cli still missing after install"
    pg_bindir >/dev/null || die "PostgreSQL binaries still missing after install"
    log "installed ${missing[*]} in $(elapsed "$start")s"
}

_policy_rc_remove() {
    if [[ -n "$_POLICY_RC_CREATED" ]] && grep -q '^# freshcache: temporary' /usr/sbin/policy-rc.d 2>/dev/null; then
        _as_root rm -f /usr/sbin/policy-rc.d
    fi
    _POLICY_RC_CREATED=""
}

# free_ports N: print N distinct free TCP ports on 127.0.0.1.
free_ports() {
    "$(any_python)" - "$1" <<'PY'
import socket
import sys

socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

# _as_pg_user CMD...: run CMD as the PostgreSQL OS user (directly when not root).
_as_pg_user() {
    if [[ $EUID -ne 0 ]]; then
        "$@"
    else
        runuser -u "$PG_OS_USER" -- "$@"
    fi
}

_ensure_pg_os_user() {
    [[ $EUID -eq 0 ]] || return 0
    id -u "$PG_OS_USER" >/dev/null 2>&1 && return 0
    log "creating system user $PG_OS_USER for PostgreSQL"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PG_OS_USER"
}

# reap_stale_services: stop servers and remove temp dirs (freshcache-services.*, and
# test-matrix.sh's freshcache-reports.*) left by runs that were killed without a chance to
# clean up (kill -9, a lost machine session).  A dir is stale when the process that
# created it (recorded in its owner.pid) no longer exists.
reap_stale_services() {
    local dir owner pid
    for dir in "${TMPDIR:-/tmp}"/freshcache-services.* "${TMPDIR:-/tmp}"/freshcache-reports.*; do
        [[ -d "$dir" && -f "$dir/owner.pid" ]] || continue
        owner="$(cat "$dir/owner.pid")"
        [[ "$owner" =~ ^[0-9]+$ ]] || continue
        kill -0 "$owner" 2>/dev/null && continue
        log "removing stale dir $dir (owner $owner is gone)"
        if [[ -f "$dir/redis.pid" ]]; then
            pid="$(cat "$dir/redis.pid")"
            # Only if that pid is still a redis-server (pids get reused).
            if [[ "$pid" =~ ^[0-9]+$ && "$(cat "/proc/$pid/comm" 2>/dev/null)" == redis-server* ]]; then
                kill "$pid" 2>/dev/null || true
            fi
        fi
        for pid_file in "$dir"/cluster/*.pid "$dir"/sentinel/*.pid; do
            [[ -f "$pid_file" ]] || continue
            pid="$(cat "$pid_file")"
            if [[ "$pid" =~ ^[0-9]+$ && "$(cat "/proc/$pid/comm" 2>/dev/null)" == redis-* ]]; then
                kill "$pid" 2>/dev/null || true
            fi
        done
        if [[ -f "$dir/pg/data/postmaster.pid" ]] && pg_bindir >/dev/null; then
            (cd "$dir" && _as_pg_user "$(pg_bindir)/pg_ctl" -D "$dir/pg/data" -m immediate -s stop) || true
        fi
        rm -rf "$dir"
    done
}

# services_start: start private Redis and PostgreSQL servers; export their addresses.
services_start() {
    local start pg_bin redis_port pg_port i
    start="$(now)"
    pg_bin="$(pg_bindir)" || die "PostgreSQL binaries not found under /usr/lib/postgresql"
    _have_redis || die "redis-server not found"
    _ensure_pg_os_user
    reap_stale_services

    FRESHCACHE_SERVICES_DIR="$(mktemp -d "${TMPDIR:-/tmp}/freshcache-services.XXXXXX")"
    export FRESHCACHE_SERVICES_DIR
    # The PostgreSQL user must be able to reach its own subdir.
    chmod 755 "$FRESHCACHE_SERVICES_DIR"
    echo "$$" >"$FRESHCACHE_SERVICES_DIR/owner.pid"
    read -r redis_port pg_port < <(free_ports 2)
    [[ -n "${redis_port:-}" && -n "${pg_port:-}" ]] || die "could not pick free ports"

    # --- Redis -------------------------------------------------------------------
    mkdir "$FRESHCACHE_SERVICES_DIR/redis"
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --dir "$FRESHCACHE_SERVICES_DIR/redis" \
        --logfile "$FRESHCACHE_SERVICES_DIR/redis/redis.log" </dev/null &
    _REDIS_PID=$!
    echo "$_REDIS_PID" >"$FRESHCACHE_SERVICES_DIR/redis.pid"

    # --- PostgreSQL --------------------------------------------------------------
    local pg_dir="$FRESHCACHE_SERVICES_DIR/pg"
    mkdir -m 700 "$pg_dir"
    [[ $EUID -ne 0 ]] || chown "$PG_OS_USER:" "$pg_dir"
    # cd: initdb and pg_ctl complain when the cwd is unreadable for the PostgreSQL user.
    (
        cd "$pg_dir"
        _as_pg_user "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust \
            -E UTF8 --locale=C --no-sync >"$pg_dir/initdb.log" 2>&1
    ) || {
        cat "$pg_dir/initdb.log" >&2
        die "initdb failed"
    }
    # Speed over durability: the cluster lives for one run.
    _as_pg_user tee -a "$pg_dir/data/postgresql.conf" >/dev/null <<EOF

# --- freshcache test run ---
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$pg_dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
EOF
    (
        cd "$pg_dir"
        _as_pg_user "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 60 -s start
    ) || {
        cat "$pg_dir/postgres.log" >&2
        die "PostgreSQL failed to start"
    }
    _PG_STARTED="$pg_dir/data"

    # --- wait for both -----------------------------------------------------------
    for i in $(seq 1 100); do
        if redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; then
            break
        fi
        if ! kill -0 "$_REDIS_PID" 2>/dev/null; then
            cat "$FRESHCACHE_SERVICES_DIR/redis/redis.log" >&2 || true
            die "redis-server exited at startup"
        fi
        [[ $i -lt 100 ]] || die "redis-server did not answer PING within 10s"
        sleep 0.1
    done
    for i in $(seq 1 100); do
        "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break
        [[ $i -lt 100 ]] || die "PostgreSQL not ready within 10s"
        sleep 0.1
    done
    # The settings' NAME; Django's test runner creates its own test_* databases.
    "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres freshcache

    export FRESHCACHE_TEST_PG_HOST=127.0.0.1
    export FRESHCACHE_TEST_PG_PORT="$pg_port"
    export FRESHCACHE_TEST_PG_USER=postgres
    export FRESHCACHE_TEST_PG_NAME=freshcache
    export FRESHCACHE_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/0"
    local pg_version
    pg_version="$("$pg_bin/postgres" --version | awk '{ print $3 }')"
    log "services up in $(elapsed "$start")s: PostgreSQL $pg_version on 127.0.0.1:$pg_port," \
        "Redis $(redis-server --version | awk '{ print $3 }' | tr -d 'v=') on 127.0.0.1:$redis_port" \
        "(dir $FRESHCACHE_SERVICES_DIR)"
    cluster_start
    sentinel_start
}

# redis_flush: empty the private Redis (between test combinations, so one combination's
# cached values and stamps can never be served to the next).
redis_flush() {
    [[ -n "${FRESHCACHE_TEST_REDIS_URL:-}" ]] || return 0
    local port="${FRESHCACHE_TEST_REDIS_URL##*:}"
    port="${port%%/*}"
    redis-cli -h 127.0.0.1 -p "$port" flushall >/dev/null
}

# services_stop: stop what services_start started and remove the temp dir.  Safe to call
# more than once and after a partial start.
services_stop() {
    _policy_rc_remove
    local pg_bin
    if [[ -n "$_PG_STARTED" ]] && pg_bin="$(pg_bindir)"; then
        (cd "$FRESHCACHE_SERVICES_DIR" && _as_pg_user "$pg_bin/pg_ctl" -D "$_PG_STARTED" -m fast -s -w stop) ||
            warn "pg_ctl stop failed"
        _PG_STARTED=""
    fi
    cluster_stop
    sentinel_stop
    if [[ -n "$_REDIS_PID" ]]; then
        kill "$_REDIS_PID" 2>/dev/null || true
        wait "$_REDIS_PID" 2>/dev/null || true
        _REDIS_PID=""
    fi
    if [[ -n "$FRESHCACHE_SERVICES_DIR" && -d "$FRESHCACHE_SERVICES_DIR" ]]; then
        rm -rf "$FRESHCACHE_SERVICES_DIR"
        log "services stopped"
    fi
    FRESHCACHE_SERVICES_DIR=""
}

# ---------------------------------------------------------------------------
# Redis Cluster and Sentinel (started by services_start, stopped by services_stop)
# ---------------------------------------------------------------------------
# cluster_start: six cluster-mode redis-servers (three primaries, one replica each) joined
# with `redis-cli --cluster create`.  The bus ports are chosen too (cluster-port, Redis 7),
# so nothing depends on port+10000 being free.  Exports
#     FRESHCACHE_TEST_CLUSTER_URL=redis://127.0.0.1:PORT/0   (any node; the client finds all)
#     FRESHCACHE_TEST_CLUSTER_NODES="127.0.0.1:P1 ... 127.0.0.1:P6"
# Every node is stopped by its port (SHUTDOWN NOSAVE), so a node a test restarted itself
# is stopped too.
_CLUSTER_PORTS=""
_SENTINEL_REDIS_PORTS=""
_SENTINEL_PORTS=""

_redis_wait_ping() { # PORT LOGFILE
    local i
    for i in $(seq 1 100); do
        redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    cat "$2" >&2 || true
    die "redis on port $1 did not answer PING within 10s"
}

cluster_start() {
    local start dir ports port bus i nodes=()
    start="$(now)"
    dir="$FRESHCACHE_SERVICES_DIR/cluster"
    mkdir -p "$dir"
    read -ra ports < <(free_ports 12)
    [[ ${#ports[@]} -eq 12 ]] || die "could not pick free ports for the cluster"
    _CLUSTER_PORTS="${ports[*]:0:6}"
    for i in 0 1 2 3 4 5; do
        port="${ports[$i]}"
        bus="${ports[$((i + 6))]}"
        redis-server --port "$port" --cluster-port "$bus" --bind 127.0.0.1 \
            --cluster-enabled yes --cluster-config-file "nodes-$port.conf" \
            --cluster-node-timeout 3000 --save '' --appendonly no --daemonize no \
            --dir "$dir" --logfile "$dir/$port.log" </dev/null >/dev/null 2>&1 &
        echo "$!" >"$dir/$port.pid"
        nodes+=("127.0.0.1:$port")
    done
    for port in $_CLUSTER_PORTS; do
        _redis_wait_ping "$port" "$dir/$port.log"
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
        >"$dir/create.log" 2>&1 || {
        cat "$dir/create.log" >&2
        die "redis-cli --cluster create failed"
    }
    for i in $(seq 1 150); do
        local ok=1
        for port in $_CLUSTER_PORTS; do
            redis-cli -h 127.0.0.1 -p "$port" cluster info 2>/dev/null |
                grep -q 'cluster_state:ok' || ok=""
        done
        [[ -n "$ok" ]] && break
        [[ $i -lt 150 ]] || die "the Redis Cluster did not reach cluster_state:ok within 15s"
        sleep 0.1
    done
    export FRESHCACHE_TEST_CLUSTER_URL="redis://127.0.0.1:${ports[0]}/0"
    export FRESHCACHE_TEST_CLUSTER_NODES="${nodes[*]}"
    log "Redis Cluster up in $(elapsed "$start")s: 3 primaries + 3 replicas on ${nodes[*]}"
}

# sentinel_start: one primary, one replica and three sentinels watching them as "mymaster"
# (quorum 2, down after 1 s).  Exports
#     FRESHCACHE_TEST_SENTINEL_PORTS="S1 S2 S3"  FRESHCACHE_TEST_SENTINEL_SERVICE=mymaster
# Sentinel mode is redis-server's own (`redis-server FILE --sentinel`), so Debian's
# redis-server package is enough; `redis-sentinel` is used when installed.
sentinel_start() {
    local start dir ports primary replica i port sentinel_cmd
    start="$(now)"
    dir="$FRESHCACHE_SERVICES_DIR/sentinel"
    mkdir -p "$dir"
    read -ra ports < <(free_ports 5)
    [[ ${#ports[@]} -eq 5 ]] || die "could not pick free ports for Sentinel"
    primary="${ports[0]}"
    replica="${ports[1]}"
    _SENTINEL_REDIS_PORTS="$primary $replica"
    _SENTINEL_PORTS="${ports[*]:2:3}"
    for port in $primary $replica; do
        local -a extra=()
        [[ "$port" == "$replica" ]] && extra=(--replicaof 127.0.0.1 "$primary")
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no --dir "$dir" --logfile "$dir/$port.log" "${extra[@]}" \
            </dev/null >/dev/null 2>&1 &
        echo "$!" >"$dir/$port.pid"
        _redis_wait_ping "$port" "$dir/$port.log"
    done
    if command -v redis-sentinel >/dev/null 2>&1; then
        sentinel_cmd=(redis-sentinel)
    else
        sentinel_cmd=(redis-server)
    fi
    for port in $_SENTINEL_PORTS; do
        cat >"$dir/sentinel-$port.conf" <<CONF
port $port
bind 127.0.0.1
dir $dir
logfile $dir/sentinel-$port.log
sentinel monitor mymaster 127.0.0.1 $primary 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 10000
sentinel parallel-syncs mymaster 1
CONF
        if [[ "${sentinel_cmd[0]}" == redis-server ]]; then
            redis-server "$dir/sentinel-$port.conf" --sentinel </dev/null >/dev/null 2>&1 &
        else
            redis-sentinel "$dir/sentinel-$port.conf" </dev/null >/dev/null 2>&1 &
        fi
        echo "$!" >"$dir/sentinel-$port.pid"
    done
    # Ready when every sentinel knows the replica and the two other sentinels.
    for i in $(seq 1 300); do
        local ready=1
        for port in $_SENTINEL_PORTS; do
            [[ "$(redis-cli -h 127.0.0.1 -p "$port" sentinel master mymaster 2>/dev/null |
                awk 'prev == "num-slaves" { s = $1 } prev == "num-other-sentinels" { o = $1 }
                     { prev = $1 } END { print s + 0, o + 0 }')" == "1 2" ]] || ready=""
        done
        [[ -n "$ready" ]] && break
        [[ $i -lt 300 ]] || die "Sentinel did not see the replica and its peers within 30s"
        sleep 0.1
    done
    export FRESHCACHE_TEST_SENTINEL_PORTS="$_SENTINEL_PORTS"
    export FRESHCACHE_TEST_SENTINEL_SERVICE=mymaster
    log "Sentinel up in $(elapsed "$start")s: primary 127.0.0.1:$primary, replica :$replica," \
        "sentinels on ${_SENTINEL_PORTS// /, }"
}

# _stop_redis_ports DIR PORTS...: SHUTDOWN NOSAVE each port, then make sure the pids we
# started are gone.
_stop_redis_ports() {
    local dir="$1" port pid
    shift
    for port in "$@"; do
        redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    done
    for pid_file in "$dir"/*.pid; do
        [[ -f "$pid_file" ]] || continue
        pid="$(cat "$pid_file")"
        [[ "$pid" =~ ^[0-9]+$ ]] || continue
        if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == redis-* ]]; then
            kill "$pid" 2>/dev/null || true
        fi
    done
}

cluster_stop() {
    [[ -n "$_CLUSTER_PORTS" ]] || return 0
    # shellcheck disable=SC2086
    _stop_redis_ports "$FRESHCACHE_SERVICES_DIR/cluster" $_CLUSTER_PORTS
    _CLUSTER_PORTS=""
}

sentinel_stop() {
    [[ -n "$_SENTINEL_PORTS$_SENTINEL_REDIS_PORTS" ]] || return 0
    # shellcheck disable=SC2086
    _stop_redis_ports "$FRESHCACHE_SERVICES_DIR/sentinel" $_SENTINEL_PORTS $_SENTINEL_REDIS_PORTS
    _SENTINEL_PORTS=""
    _SENTINEL_REDIS_PORTS=""
}
