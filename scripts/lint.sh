#!/usr/bin/env bash
# Lint in the main venv: ruff check, ruff format --check, mypy (config in pyproject.toml).
# All three always run; the exit status is non-zero if any of them failed.
#
#     scripts/lint.sh            # expects .venv (make lint creates it first)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

venv="$(leg_venv main)"
[[ -x "$venv/bin/ruff" && -x "$venv/bin/mypy" ]] || die "$venv has no ruff/mypy: run scripts/venv.sh main"
cd "$REPO_ROOT"

failed=()
run_step() {
    local name="$1"
    shift
    banner "lint: $name"
    if "$@"; then
        echo "lint: $name: ok"
    else
        echo "lint: $name: FAILED"
        failed+=("$name")
    fi
}

run_step "ruff check" "$venv/bin/ruff" check .
run_step "ruff format --check" "$venv/bin/ruff" format --check .
run_step "mypy" "$venv/bin/mypy"

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "lint: FAILED (${failed[*]})"
    exit 1
fi
echo "lint: all clean"
