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

. tools/lib/test-server.sh
trap stop_test_server EXIT
trap 'exit 130' INT TERM

# --relative-time: the recorded runs, moved so that the recording ends now, fall in
# failed.lua's default window of the last 24 hours.
start_test_server "$lua" --relative-time || exit 1
PREFECT_API_URL=$TEST_SERVER_URL
export PREFECT_API_URL
echo "demo: bundled test server at $PREFECT_API_URL (a Prefect 2.19.9 recording, moved to end now)"
status=0
"$lua" examples/failed.lua "$@" || status=$?
stop_test_server
exit $status
