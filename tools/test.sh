#!/bin/sh
# Runs the busted specs under each interpreter given (lua5.4, luajit) against
# its own build of prefect.core, then prints one closing line for all of them:
#   N passed, N failed, N skipped
# and exits non-zero if anything failed.
set -u
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)

passed=0 failed=0 skipped=0 status=0
for lua in "$@"; do
    echo "== specs under $lua"
    out=$(mktemp)
    LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/spec/support/?.lua;;" \
    LUA_CPATH="$root/build/$lua/?.so;;" \
    PREFECT_TEST_LUA="$lua" \
        "$lua" /usr/bin/busted -o plainTerminal spec 2>&1 | tee "$out"
    rc=$?
    # "12 successes / 1 failure / 0 errors / 2 pending : 1.2 seconds"
    line=$(grep -E '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$out" | tail -n 1)
    rm -f "$out"
    if [ -z "$line" ]; then
        echo "tools/test.sh: busted under $lua printed no totals" >&2
        failed=$((failed + 1)) status=1
        continue
    fi
    ok=$(echo "$line" | awk '{print $1}')
    bad=$(echo "$line" | awk '{print $4 + $7}')
    pend=$(echo "$line" | awk '{print $10}')
    passed=$((passed + ok)) failed=$((failed + bad)) skipped=$((skipped + pend))
    [ "$bad" -eq 0 ] || status=1
    [ "$ok" -gt 0 ] || status=1
done

echo "$passed passed, $failed failed, $skipped skipped"
exit $status
