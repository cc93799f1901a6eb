#!/bin/sh
# The main job: the failed and crashed task runs, grouped by flow run.
# With PREFECT_API_URL set it queries that server; otherwise it starts the
# bundled test server with the recorded dataset on a free loopback port,
# runs the query against it, and stops the server.
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
lua=${LUA:-lua5.4}
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;"
export LUA_CPATH="$root/build/$lua/?.so;;"

if [ -n "${PREFECT_API_URL:-}" ]; then
    exec "$lua" examples/failed.lua "$@"
fi

dir=$(mktemp -d)
server_pid=
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
    rm -rf "$dir"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

"$lua" bin/prefect-test-server --port 0 >"$dir/out" 2>"$dir/err" &
server_pid=$!
i=0
until grep -q '^listening ' "$dir/out" 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 100 ] || ! kill -0 "$server_pid" 2>/dev/null; then
        echo "demo: the test server did not start:" >&2
        cat "$dir/err" >&2
        exit 1
    fi
    sleep 0.1
done
PREFECT_API_URL=$(sed -n 's/^listening //p' "$dir/out")
export PREFECT_API_URL
echo "demo: bundled test server at $PREFECT_API_URL (recorded Prefect 2.19.9 dataset)"
# The recorded runs are from 2026-11-29; look back far enough to include them.
status=0
"$lua" examples/failed.lua --hours 100000 "$@" || status=$?
stop_server
exit $status
