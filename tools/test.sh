#!/bin/sh
# Runs the test stages named on the command line (default: all of them) and
# prints one closing line for everything:
#   N passed, N failed, N skipped
# exiting non-zero if anything failed.
#   lua5.4, luajit  the busted specs under that interpreter and its build
#   ctest           the C tests (tests/c), e.g. two threads with their own lua_State
#   valgrind        the decoder and transport specs under valgrind memcheck
#   asan            every spec under lua5.4 with prefect.core built with ASan + UBSan
#   fuzz            the decoder's libFuzzer target for $FUZZ_SECONDS (default 60)
#   real            tests/real against the real Prefect server (tools/real/requirements.txt pins
#                   it) on SQLite and on PostgreSQL; skipped only when PREFECT_REAL=skip
# Stages other than busted and ctest count as one check each.
set -u
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
[ $# -gt 0 ] || set -- lua5.4 luajit ctest valgrind asan fuzz

passed=0 failed=0 skipped=0
log=$(mktemp)
failures=$(mktemp) # what failed, named again just above the closing line
trap 'rm -f "$log" "$failures"' EXIT

count_check() { # name, exit code
    if [ "$2" -eq 0 ]; then
        passed=$((passed + 1))
    else
        echo "tools/test.sh: $1 failed" >&2
        echo "$1" >>"$failures"
        failed=$((failed + 1))
    fi
}

run_busted() { # interpreter [spec paths, default spec]
    lua=$1
    shift
    [ $# -gt 0 ] || set -- spec
    echo "== specs under $lua: $*"
    tally=$(mktemp)
    LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/spec/support/?.lua;;" \
    LUA_CPATH="$root/build/$lua/?.so;;" \
    PREFECT_TEST_LUA="$lua" PREFECT_TALLY_FILE="$tally" \
        "$lua" /usr/bin/busted -o "$root/tools/busted_tally.lua" "$@"
    rc=$?
    totals=$(head -n 1 "$tally")
    tail -n +2 "$tally" | sed "s/^/$lua: /" >>"$failures"
    rm -f "$tally"
    if [ -z "$totals" ]; then
        count_check "busted under $lua (no totals: exit $rc)" 1
        return
    fi
    set -- $totals
    passed=$((passed + $1)) failed=$((failed + $2 + $3)) skipped=$((skipped + $4))
    if [ "$rc" -ne 0 ] && [ $(($2 + $3)) -eq 0 ]; then
        count_check "busted (exit $rc)" 1
    fi
}

run_ctest() {
    echo "== C tests"
    tools/ctest.sh >"$log" 2>&1
    rc=$?
    cat "$log"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    if [ -z "$line" ]; then
        count_check "C tests (no totals printed)" 1
        return
    fi
    set -- $line
    passed=$((passed + $1)) failed=$((failed + $3))
    if [ "$rc" -ne 0 ] && [ "$3" -eq 0 ]; then
        count_check "C tests (exit $rc)" 1
    fi
}

for stage in "$@"; do
    case "$stage" in
        lua5.4 | luajit) run_busted "$stage" ;;
        ctest) run_ctest ;;
        real)
            if [ "${PREFECT_REAL:-}" = skip ]; then
                echo "== the real Prefect server: skipped (PREFECT_REAL=skip)"
                skipped=$((skipped + 1))
                continue
            fi
            echo "== the real Prefect server: $(cat tools/real/requirements.txt)"
            if ! tools/real/venv.sh; then
                count_check "installing the real Prefect server" 1
                continue
            fi
            for db in sqlite postgres; do
                PREFECT_REAL_DB=$db run_busted lua5.4 tests/real/differential_spec.lua
            done
            run_busted lua5.4 tests/real/auth_csrf_spec.lua
            ;;
        valgrind)
            echo "== valgrind memcheck: decoder, transport and read_ahead specs"
            tools/valgrind.sh spec/decode_spec.lua spec/transport_spec.lua spec/read_ahead_spec.lua
            count_check "valgrind memcheck" $?
            ;;
        asan)
            echo "== every spec under ASan + UBSan (lua5.4)"
            tools/asan.sh >"$log" 2>&1
            rc=$?
            tail -n 25 "$log"
            count_check "ASan/UBSan run" $rc
            ;;
        fuzz)
            echo "== fuzzing the decoder for ${FUZZ_SECONDS:-60} s"
            tools/fuzz.sh "${FUZZ_SECONDS:-60}" >"$log" 2>&1
            rc=$?
            tail -n 15 "$log"
            count_check "decoder fuzzing" $rc
            ;;
        *)
            echo "tools/test.sh: unknown stage $stage" >&2
            exit 2
            ;;
    esac
done

if [ -s "$failures" ]; then
    echo "== what failed"
    cat "$failures"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
