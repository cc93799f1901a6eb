#!/bin/sh
# Builds the C host (examples/host/host.c with prefect.core linked in
# statically), starts the test server with a slow fault (a delay before each
# answer, then the body dripped out in small pieces), and runs
# examples/host/frames.lua in the host's 60 fps loop. Prints the host's
# figures and one closing line:
#   N passed, N failed
# and exits non-zero if anything failed.
# Usage: tools/examples.sh
#   MAX_FRAME_MS   the worst frame allowed while the query is in flight
#                  (default: the 16.7 ms budget + 5 ms; 0: report only)
#   HOST_OPTS      more host options, e.g. "--gc step --frames-csv frames.csv"
#   HOST_CPUS      pin the host to these CPUs (taskset -c)
#   SERVER_CPUS    pin the test server to these CPUs
#                  With 2 CPUs or more these default to the first CPU for the
#                  host and the last for the server: a real Prefect server runs
#                  on another machine, and the bundled one, building a page in
#                  one 40 ms burst, would otherwise take the loop's CPU when a
#                  frame is due. Set both empty (HOST_CPUS= SERVER_CPUS=) for
#                  default scheduling.
#   HOST_PRIORITY  run the host with real-time priority N (chrt -f N; needs
#                  root or an rtprio limit): the scheduler then runs it as
#                  soon as its frame is due, whatever else wants the CPU
#   HOST_OUT       where to build the host (default build/examples)
# docs/embedding.md explains the figures and what each of these changes.
set -u
cd "$(dirname "$0")/.." || exit 1
out=${HOST_OUT:-build/examples}
mkdir -p "$out"

CC=${CC:-cc}
# shellcheck disable=SC2046 # pkg-config's output is a list of words
$CC -std=c99 -Wall -Wextra -Werror -pedantic -D_POSIX_C_SOURCE=200809L \
    -DPREFECT_VERSION='"scm-1"' -O2 -g -o "$out/host" examples/host/host.c csrc/*.c \
    $(pkg-config --cflags --libs lua5.4 libcurl) -lpthread || {
    echo "0 passed, 1 failed"
    exit 1
}

tmp=$(mktemp -d)
. tools/lib/test-server.sh
cleanup() {
    stop_test_server
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

if ! start_test_server lua5.4 --generate 2000 --seed 1; then
    echo "0 passed, 1 failed"
    exit 1
fi

cpus=$(nproc 2>/dev/null || echo 1)
if [ "$cpus" -ge 2 ]; then
    HOST_CPUS=${HOST_CPUS-0}
    SERVER_CPUS=${SERVER_CPUS-$((cpus - 1))}
fi
if [ -n "${SERVER_CPUS:-}" ] && ! taskset -a -p -c "$SERVER_CPUS" "$TEST_SERVER_PID" >/dev/null; then
    echo "0 passed, 1 failed"
    exit 1
fi
set --
[ -n "${HOST_CPUS:-}" ] && set -- "$@" taskset -c "$HOST_CPUS"
[ -n "${HOST_PRIORITY:-}" ] && set -- "$@" chrt -f "$HOST_PRIORITY"
host_cpus=${HOST_CPUS:+CPUs $HOST_CPUS}
server_cpus=${SERVER_CPUS:+CPUs $SERVER_CPUS}
echo "host on ${host_cpus:-any CPU}${HOST_PRIORITY:+, SCHED_FIFO $HOST_PRIORITY}; test server on" \
    "${server_cpus:-any CPU}; load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"

# The host registers prefect.core itself: an empty LUA_CPATH-free environment
# shows that it never loads core.so (lua-cjson and luasocket come from the system).
# shellcheck disable=SC2086 # HOST_OPTS is a list of words
env -u LUA_PATH -u LUA_CPATH PREFECT_API_URL="$TEST_SERVER_URL" \
    "$@" "$out/host" --max-frame-ms "${MAX_FRAME_MS:-21.7}" ${HOST_OPTS:-} examples/host/frames.lua \
    --fault "delay_ms=300; drip_bytes=2048; drip_ms=5" >"$tmp/host.out" 2>&1
rc=$?
cat "$tmp/host.out"
if ! grep -qE '^[0-9]+ passed, [0-9]+ failed$' "$tmp/host.out"; then
    echo "0 passed, 1 failed"
    exit 1
fi
exit $rc
