#!/bin/sh
# Runs busted spec files under valgrind memcheck (default: spec/transport_spec.lua)
# with the interpreter in $LUA (default lua5.4) and its build of prefect.core.
# Fails on any memcheck error and on memory definitely or indirectly lost;
# "still reachable" (libcurl's and OpenSSL's process-wide state, which is
# never torn down on purpose) is not a leak. The test server runs as a child
# process and is not traced.
#   usage: tools/valgrind.sh [spec files...]
set -u
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
lua=${LUA:-lua5.4}
[ $# -gt 0 ] || set -- spec/transport_spec.lua

make --no-print-directory build LUA="$lua" >/dev/null || exit 1

log=$(mktemp)
trap 'rm -f "$log"' EXIT INT TERM

LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/spec/support/?.lua;;" \
LUA_CPATH="$root/build/$lua/?.so;;" \
PREFECT_TEST_LUA="$lua" \
PREFECT_UNDER_VALGRIND=1 \
    valgrind --tool=memcheck --leak-check=full \
    --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
    --error-exitcode=99 --num-callers=40 --track-origins=yes \
    --suppressions="$root/tools/valgrind.supp" --log-file="$log" \
    "$lua" /usr/bin/busted -o plainTerminal "$@"
rc=$?

grep -E 'ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|still reachable' "$log" |
    sed 's/^==[0-9]*== *//'
if [ $rc -ne 0 ]; then
    echo "valgrind.sh: failed (exit $rc); memcheck's report:" >&2
    grep -v '^==[0-9]*== *$' "$log" | head -n 300 >&2
    exit 1
fi
echo "valgrind.sh: no errors, no leaks"
