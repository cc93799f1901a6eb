#!/bin/sh
# Re-records spec/fixtures/dataset-<version>.json and exchanges-<version>.json: runs the
# differential suite against the real Prefect server on SQLite (which writes what the server
# answered to build/real/) and copies the recording into spec/fixtures/.
set -eu
cd "$(dirname "$0")/../.."
tools/real/venv.sh
version=$(sed -n 's/^prefect==//p' tools/real/requirements.txt)
rm -f "build/real/dataset-$version-sqlite.json" "build/real/exchanges-$version-sqlite.json"
root=$(pwd)
LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/spec/support/?.lua;;" \
LUA_CPATH="$root/build/lua5.4/?.so;;" PREFECT_REAL_DB=sqlite \
    lua5.4 /usr/bin/busted tests/real/differential_spec.lua ||
    echo "record: the suite found differences; the recording is what the real server said" >&2
for kind in dataset exchanges; do
    src="build/real/$kind-$version-sqlite.json"
    [ -s "$src" ] || { echo "record: $src was not written" >&2; exit 1; }
    cp "$src" "spec/fixtures/$kind-$version.json"
done
echo "record: spec/fixtures/dataset-$version.json and exchanges-$version.json"
