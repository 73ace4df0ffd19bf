#!/usr/bin/env bash
# Create or update the virtualenv of one leg:
#
#     scripts/venv.sh main|dj42|dj6|docs
#
# The venv gets `pip install -e '.[EXTRAS]' 'DJANGO_SPEC'` (see lib.sh for the table).
# A stamp file inside the venv records a hash of everything that decides its contents
# (pyproject.toml, the leg's interpreter, Django range, extras, and this script); when the
# stamp matches, nothing is done, so repeated runs cost a fraction of a second.
# pip's output goes to a log file inside the venv and is shown only if pip fails.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 1 ]] || die "usage: $0 LEG"
leg="$1"
venv="$(leg_venv "$leg")"
pyver="$(leg_python_version "$leg")"
django_spec="$(leg_django_spec "$leg")"
extras="$(leg_extras "$leg")"

base_python="$(find_python "$pyver")" ||
    die "no Python $pyver found (looked in pyenv and on PATH; set FRESHCACHE_PYTHON_${pyver//./_})"

stamp_file="$venv/.freshcache-stamp"
stamp="$(
    {
        echo "python=$base_python"
        echo "django=$django_spec"
        echo "extras=$extras"
        sha256sum "$REPO_ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | awk '{ print $1 }'
    } | sha256sum | awk '{ print $1 }'
)"

# Up to date: the stamp matches and the venv's interpreter still runs (a removed pyenv
# build leaves a venv whose python is a dangling link).
if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]] &&
    "$venv/bin/python" -c '' 2>/dev/null; then
    exit 0
fi

start="$(now)"
log "venv $leg: installing into ${venv#"$REPO_ROOT"/} (Python $pyver, $django_spec, extras [$extras]) ..."

# Recreate from scratch when the interpreter is missing or of another version, else
# update in place (pip only installs what changed).
if ! "$venv/bin/python" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$pyver'.split('.'))))" 2>/dev/null; then
    rm -rf "$venv"
    "$base_python" -m venv "$venv"
fi
rm -f "$stamp_file"

pip_log="$venv/pip-install.log"
if ! (
    cd "$REPO_ROOT" &&
        "$venv/bin/python" -m pip install --progress-bar off --upgrade \
            -e ".[$extras]" "$django_spec"
) >"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    die "venv $leg: pip install failed (log above, also in $pip_log)"
fi

echo "$stamp" >"$stamp_file"
versions="$("$venv/bin/python" -c 'import sys, django; print(f"Python {sys.version.split()[0]}, Django {django.get_version()}")' 2>/dev/null || echo "?")"
log "venv $leg: ready in $(elapsed "$start")s ($versions)"
