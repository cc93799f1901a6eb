#!/bin/sh
# Makes build/prefect-venv: a virtualenv with the real Prefect server pinned in
# tools/real/requirements.txt. Reused when it already holds exactly that pin.
# pip's output goes to build/prefect-venv.log, printed only when the install fails.
set -eu
cd "$(dirname "$0")/../.."
venv=build/prefect-venv
log=build/prefect-venv.log
pin=tools/real/requirements.txt
if [ -f "$venv/.complete" ] && cmp -s "$pin" "$venv/.complete"; then
    exit 0
fi
mkdir -p build
rm -rf "$venv"
echo "real: installing $(tr '\n' ' ' <"$pin")into $venv (log: $log)"
if ! { python3 -m venv "$venv" && "$venv/bin/pip" install --disable-pip-version-check \
    -r "$pin"; } >"$log" 2>&1; then
    cat "$log" >&2
    if grep -qiE "connection|resolve|network|timed out|No matching distribution" "$log"; then
        echo "real: cannot install $(cat "$pin") from PyPI: no network access to it (set PREFECT_REAL=skip to skip this stage)" >&2
    else
        echo "real: installing $(cat "$pin") failed; pip's output is above" >&2
    fi
    exit 1
fi
cp "$pin" "$venv/.complete"
