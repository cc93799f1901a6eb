# Sourced by the tools that need the bundled test server for a while:
#   start_test_server LUA [launcher options...]
# starts bin/prefect-test-server in the background on a free loopback port and
# waits until it listens; then TEST_SERVER_URL is its API URL. Returns 1 after
# printing the server's own error output if it does not come up.
#   stop_test_server
# stops it (also safe when none is running). Callers trap EXIT to call it.

TEST_SERVER_PID=
TEST_SERVER_URL=
TEST_SERVER_DIR=

start_test_server() {
    lua=$1
    shift
    TEST_SERVER_DIR=$(mktemp -d)
    LUA_PATH="$(pwd)/lua/?.lua;$(pwd)/lua/?/init.lua;;" \
        "$lua" bin/prefect-test-server --port 0 "$@" \
        >"$TEST_SERVER_DIR/out" 2>"$TEST_SERVER_DIR/err" &
    TEST_SERVER_PID=$!
    tries=0
    until grep -q '^listening ' "$TEST_SERVER_DIR/out" 2>/dev/null; do
        tries=$((tries + 1))
        if [ "$tries" -gt 200 ] || ! kill -0 "$TEST_SERVER_PID" 2>/dev/null; then
            echo "the test server did not start:" >&2
            cat "$TEST_SERVER_DIR/err" >&2
            stop_test_server
            return 1
        fi
        sleep 0.1
    done
    TEST_SERVER_URL=$(sed -n 's/^listening //p' "$TEST_SERVER_DIR/out")
}

stop_test_server() {
    if [ -n "$TEST_SERVER_PID" ]; then
        kill "$TEST_SERVER_PID" 2>/dev/null || true
        wait "$TEST_SERVER_PID" 2>/dev/null || true
        TEST_SERVER_PID=
    fi
    [ -n "$TEST_SERVER_DIR" ] && rm -rf "$TEST_SERVER_DIR"
    TEST_SERVER_DIR=
}
