#!/bin/sh
# Runs the busted specs (default: all of spec/) under Lua 5.4 with prefect.core
# built with AddressSanitizer and UndefinedBehaviorSanitizer, and fails on any
# sanitizer report. Ends with busted's totals: "N passed, N failed".
#   usage: tools/asan.sh [spec files or directories...]
#
# How:
# - prefect.core is built with -fsanitize=address,undefined into
#   build/asan-lua5.4/ (the normal build is not touched). UBSan does not
#   recover: the first report aborts the process.
# - lua5.4 itself is not instrumented, so the ASan runtime is loaded first with
#   LD_PRELOAD (it must come before any other library that allocates).
# - Leaks: LeakSanitizer runs in the busted process, the one that loads
#   prefect.core for every spec (detect_leaks=1). It reports only blocks that
#   nothing points to any more, so libcurl's and OpenSSL's process-wide state
#   and the Lua heap (busted ends with os.exit, without lua_close) are not
#   reported, and no suppressions are needed. valgrind (tools/valgrind.sh)
#   covers leaks a second way.
# - Child processes (nginx, sh, openssl, localedef, and child interpreters
#   that load prefect.core, e.g. decode_spec's locale test) inherit
#   LD_PRELOAD, so they run with the ASan runtime and any memory error
#   in them fails the run too, but without the leak check: system tools leak
#   at exit on purpose (localedef does), which is not ours to report. A
#   one-line preloaded library (childenv.so, built here) does that: its
#   constructor runs after the ASan runtime has read ASAN_OPTIONS and replaces
#   ASAN_OPTIONS in the environment with the children's options
#   (detect_leaks=0), so only the top process checks leaks. The ASan runtime
#   must stay first in LD_PRELOAD. The test server alone runs without the
#   runtime ($PREFECT_TEST_LUA names a wrapper that drops it for
#   bin/prefect-test-server): it is pure Lua and never loads prefect.core, and
#   specs that count its connections are timing-sensitive.
# - ASan and LSan reports go to files under the log directory (log_path),
#   whichever process wrote them; UBSan (gcc's runtime ignores log_path)
#   writes "runtime error:" to standard error, which is kept in the same
#   directory. The run fails if there is any report, even when busted itself
#   passed.
# - A canary module with a heap overflow, a leak and a signed overflow is
#   built and run first: if the sanitizers would not catch those, the run
#   fails instead of reporting a clean result that proves nothing.
set -u
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
[ $# -gt 0 ] || set -- spec

cc=${CC:-gcc}
out="$root/build/asan-lua5.4"
logs="$out/reports"
san="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
runtime=$("$cc" -print-file-name=libasan.so)
case "$runtime" in
    /*) ;;
    *)
        echo "asan.sh: $cc has no libasan.so (install libasan8 / libgcc-12-dev)" >&2
        exit 1
        ;;
esac

start=$(date +%s)
mkdir -p "$out" || exit 1
# The examples' specs run the scripts as a user would, with the normal build.
make --no-print-directory build LUA=lua5.4 >/dev/null || exit 1
make --no-print-directory -B build LUA=lua5.4 BUILD="$out" CC="$cc" \
    CFLAGS="-O1 -g $san" >"$out.build.log" 2>&1 || {
    cat "$out.build.log" >&2
    exit 1
}
rm -f "$out.build.log"
rm -rf "$logs"
mkdir -p "$logs"

# Children inherit ASan without its leak check (see above).
cat >"$out/childenv.c" <<'EOF'
#include <stdlib.h>
__attribute__((constructor)) static void childenv(void) {
    const char *opts = getenv("PREFECT_ASAN_CHILD_OPTIONS");
    if (opts) setenv("ASAN_OPTIONS", opts, 1);
}
EOF
"$cc" -O1 -fPIC -shared -o "$out/childenv.so" "$out/childenv.c" || exit 1
preload="$runtime:$out/childenv.so"

# $PREFECT_TEST_LUA for the specs: the test server (pure Lua, never loads
# prefect.core) runs without the runtime, at its normal speed, so specs that
# time it or count its connections see what they see outside this script;
# other child interpreters (which may load prefect.core) keep it.
wrapper="$out/lua5.4"
cat >"$wrapper" <<'EOF'
#!/bin/sh
for a in "$@"; do
    case "$a" in
        */bin/prefect-test-server) unset LD_PRELOAD ASAN_OPTIONS PREFECT_ASAN_CHILD_OPTIONS ;;
    esac
done
exec lua5.4 "$@"
EOF
chmod +x "$wrapper"

# A small quarantine: freed memory is reused soon, as without ASan, so the specs' bounds on peak
# memory still mean something (the default 256 MB would hold every freed page buffer).
common="abort_on_error=0:halt_on_error=1:quarantine_size_mb=16:log_path=$logs/report"
export ASAN_OPTIONS="detect_leaks=1:$common"
export PREFECT_ASAN_CHILD_OPTIONS="detect_leaks=0:$common"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/report"

# Canary: proves that this set-up (preloaded runtime, dlopen'ed module) reports.
canary="$out/canary"
mkdir -p "$canary"
cat >"$canary/canary.c" <<'EOF'
#include <lauxlib.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
static int overflow(lua_State *L) {
    char *p = malloc(8);
    size_t n = (size_t)luaL_checkinteger(L, 1);
    memset(p, 1, n + 1);
    lua_pushlstring(L, p, n);
    free(p);
    return 1;
}
static int leak(lua_State *L) {
    void *volatile p = malloc(4096);
    memset(p, 1, 4096);
    p = NULL;
    (void)L;
    return 0;
}
static int signed_overflow(lua_State *L) {
    volatile int i = INT_MAX;
    lua_pushinteger(L, i + (int)luaL_checkinteger(L, 1));
    return 1;
}
int luaopen_canary(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"overflow", overflow}, {"leak", leak}, {"signed_overflow", signed_overflow}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
EOF
# shellcheck disable=SC2086,SC2046 # flag lists, split on purpose
"$cc" -O1 -g $san -fPIC -shared $(pkg-config --cflags lua5.4) -o "$canary/canary.so" "$canary/canary.c" ||
    exit 1
reported() { # any ASan/LSan report file, or a UBSan report in the saved standard error
    ls "$logs"/report.* >/dev/null 2>&1 ||
        grep -qE 'runtime error:|Sanitizer' "$logs/stderr" 2>/dev/null
}
canary_run() { # Lua code; runs it as the specs run, with the canary module on the path
    rm -f "$logs"/*
    LD_PRELOAD="$preload" LUA_CPATH="$canary/?.so" LUA_PATH="" lua5.4 -e "$1" >/dev/null 2>"$logs/stderr"
}
for fn in overflow leak signed_overflow; do
    canary_run "require('canary').$fn(8)"
    if ! reported; then
        echo "asan.sh: the canary's $fn was not reported: the sanitizers are not working" >&2
        exit 1
    fi
done
canary_run "os.execute([[lua5.4 -e 'require(\"canary\").overflow(8)']])"
if ! reported; then
    echo "asan.sh: the canary's overflow in a child process was not reported" >&2
    exit 1
fi
canary_run "os.execute([[lua5.4 -e 'require(\"canary\").leak(8)']])"
if reported; then
    echo "asan.sh: a leak in a child process was reported: childenv.so did not take effect" >&2
    cat "$logs"/* >&2
    exit 1
fi
rm -f "$logs"/*

tally=$(mktemp)
trap 'rm -f "$tally"' EXIT INT TERM
LD_PRELOAD="$preload" \
LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/spec/support/?.lua;;" \
LUA_CPATH="$out/?.so;;" \
PREFECT_TEST_LUA="$wrapper" PREFECT_UNDER_ASAN=1 PREFECT_TALLY_FILE="$tally" \
    lua5.4 /usr/bin/busted -o "$root/tools/busted_tally.lua" "$@" 2>"$logs/stderr"
rc=$?
cat "$logs/stderr" >&2
totals=$(cat "$tally" 2>/dev/null)
seconds=$(($(date +%s) - start))

status=0
nreports=0
if reported; then
    echo "asan.sh: sanitizer reports:" >&2
    for f in "$logs"/report.*; do
        [ -e "$f" ] || continue
        nreports=$((nreports + 1))
        echo "---- $f" >&2
        head -n 80 "$f" >&2
    done
    if grep -qE 'runtime error:|Sanitizer' "$logs/stderr"; then
        nreports=$((nreports + 1))
        echo "---- standard error:" >&2
        grep -A 40 -E 'runtime error:|Sanitizer' "$logs/stderr" | head -n 80 >&2
    fi
    status=1
fi
if [ -z "$totals" ]; then
    echo "asan.sh: busted ended without totals (exit $rc): a sanitizer aborted it?" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
# shellcheck disable=SC2086 # "passed failed errors pending", split on purpose
set -- $totals
failed=$(($2 + $3))
[ "$rc" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
[ "$failed" -eq 0 ] || status=1
echo "asan.sh: ${seconds} s; sanitizer reports: $nreports"
echo "$1 passed, $failed failed"
exit $status
