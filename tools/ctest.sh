#!/bin/sh
# Builds and runs the C tests (tests/c/*.c) against the lua5.4 build of
# prefect.core and a test server started here, then prints one closing line:
#   N passed, N failed
# and exits non-zero if anything failed. Usage: tools/ctest.sh
set -u
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
lua=lua5.4
out=build/ctest
mkdir -p "$out"

make --no-print-directory build LUA=$lua >/dev/null || exit 1

CC=${CC:-cc}
for src in tests/c/*.c; do
    bin="$out/$(basename "$src" .c)"
    # -Wl,-E: the module, loaded with dlopen, finds the Lua API in the host.
    $CC -std=c99 -Wall -Wextra -Werror -pedantic -D_POSIX_C_SOURCE=200809L -g \
        $(pkg-config --cflags $lua) -o "$bin" "$src" \
        $(pkg-config --libs $lua) -lpthread -Wl,-E || exit 1
done

tmp=$(mktemp -d)
. tools/lib/test-server.sh
cleanup() {
    stop_test_server
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

if ! start_test_server "$lua" --generate 1000 --seed 1; then
    echo "0 passed, 1 failed"
    exit 1
fi
url=$TEST_SERVER_URL

passed=0 failed=0 status=0
for src in tests/c/*.c; do
    bin="$out/$(basename "$src" .c)"
    echo "== $bin"
    LUA_CPATH="$root/build/$lua/?.so;;" "$bin" "$url" >"$tmp/test.out" 2>&1
    rc=$?
    cat "$tmp/test.out"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$tmp/test.out" | tail -n 1)
    if [ -z "$line" ]; then
        failed=$((failed + 1)) status=1
        continue
    fi
    passed=$((passed + $(echo "$line" | awk '{print $1}')))
    failed=$((failed + $(echo "$line" | awk '{print $3}')))
    [ $rc -eq 0 ] || status=1
done

echo "$passed passed, $failed failed"
exit $status
