#!/usr/bin/env bash
# Create $REPO/.venv and install the pinned test tools from tests/python/requirements.txt.
# Idempotent: a stamp file records the hash of requirements.txt; a second run is a no-op.
# Usage: scripts/pyenv.sh        (prints the venv path on stdout, progress on stderr)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
REQ="$REPO/tests/python/requirements.txt"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
up_to_date() { [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; }
if up_to_date; then
    echo "pyenv: $VENV is up to date" >&2
    echo "$VENV"
    exit 0
fi

# Tests may call this in parallel on a fresh machine: one installs, the others wait.
mkdir -p "$VENV"
exec 9>"$VENV/.lock"
flock 9
if up_to_date; then echo "$VENV"; exit 0; fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "pyenv: creating virtualenv $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
echo "pyenv: installing $(grep -cvE '^\s*(#|$)' "$REQ") pinned packages from $REQ" >&2
# --disable-pip-version-check: no extra call out; -q keeps the log short, errors still show.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" >&2
echo "$want" > "$STAMP"
echo "pyenv: done ($VENV)" >&2
echo "$VENV"
