# shellcheck shell=bash
# Shared helpers for the scripts in this folder.  Source it, don't run it:
#
#     . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It sets REPO_ROOT and defines logging helpers, the Python-interpreter lookup and
# the table of test legs (which venv, which interpreter, which Django range).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

# Be predictable whatever the caller's shell has in it.
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONDONTWRITEBYTECODE=1

# ---------------------------------------------------------------------------
# logging
# ---------------------------------------------------------------------------
log() { printf '[freshcache] %s\n' "$*" >&2; }
warn() { printf '[freshcache] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[freshcache] ERROR: %s\n' "$*" >&2
    exit 1
}

# banner TEXT: a line that stands out in a long CI log.
banner() {
    printf '\n==================== %s ====================\n' "$*"
}

# now: seconds since the epoch, with decimals, for timings.
now() { date +%s.%N; }

# elapsed START: seconds since START (from `now`), one decimal.
elapsed() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }

# ---------------------------------------------------------------------------
# legs: name -> venv, Python version, Django requirement, extras
# ---------------------------------------------------------------------------
# The main leg is the one developers use day to day (lint, demo, docs build on it).
ALL_LEGS=(main dj42 dj6)

leg_venv() {
    case "$1" in
        main) echo "$REPO_ROOT/.venv" ;;
        dj42) echo "$REPO_ROOT/.venv-dj42" ;;
        dj6) echo "$REPO_ROOT/.venv-dj6" ;;
        docs) echo "$REPO_ROOT/.venv-docs" ;;
        *) die "unknown leg '$1' (known: ${ALL_LEGS[*]} docs)" ;;
    esac
}

leg_python_version() {
    case "$1" in
        main | docs) echo "3.11" ;;
        dj42) echo "3.10" ;;
        dj6) echo "3.13" ;;
        *) die "unknown leg '$1'" ;;
    esac
}

leg_django_spec() {
    case "$1" in
        main | docs) echo "Django>=5.2,<5.3" ;;
        dj42) echo "Django>=4.2,<5" ;;
        dj6) echo "Django>=6.0,<7" ;;
        *) die "unknown leg '$1'" ;;
    esac
}

leg_extras() {
    case "$1" in
        main) echo "test,lint" ;;
        dj42 | dj6) echo "test" ;;
        docs) echo "docs" ;;
        *) die "unknown leg '$1'" ;;
    esac
}

# find_python X.Y: print the path of a CPython X.Y interpreter.
# Order: $FRESHCACHE_PYTHON_X_Y (e.g. FRESHCACHE_PYTHON_3_11), the newest pyenv
# build of X.Y, then pythonX.Y on PATH.
find_python() {
    local want="$1" var candidate
    var="FRESHCACHE_PYTHON_${want//./_}"
    if [[ -n "${!var:-}" ]]; then
        echo "${!var}"
        return 0
    fi
    local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    candidate="$(
        find "$pyenv_root/versions" -maxdepth 1 -name "$want.*" 2>/dev/null |
            sort -V | tail -n 1
    )"
    if [[ -n "$candidate" && -x "$candidate/bin/python$want" ]]; then
        echo "$candidate/bin/python$want"
        return 0
    fi
    if candidate="$(command -v "python$want")"; then
        echo "$candidate"
        return 0
    fi
    return 1
}

# any_python: some Python 3 for small helper snippets (ports, JUnit summary).
any_python() {
    if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
        echo "$REPO_ROOT/.venv/bin/python"
    elif find_python 3.11 2>/dev/null; then
        :
    else
        command -v python3 || die "no python3 found"
    fi
}
