#!/bin/sh
# Runs every benchmark, peers included, and prints their reports (ratios of medians measured in the
# same run). Not a test: nothing here fails on a time.
#   tools/bench.sh            quick: about 8 minutes on 2 cores
#   tools/bench.sh --full     the end-to-end bench at full size (reads 1,000,000 runs; ~14 minutes)
# Installs the Debian packages it needs (lua-curl and lua-http for their peers, which Debian ships
# for Lua 5.1-5.3 only, so those peers run under LuaJIT; wrk for the OpenResty bench) and builds
# both interpreters' modules first. The network bench adds Prefect's own Python client when
# build/prefect-venv exists (tools/real/venv.sh).
set -eu
cd "$(dirname "$0")/.." || exit 1

mode=--quick
case "${1:-}" in
    --full) mode=--full ;;
    --quick | "") ;;
    *) echo "usage: tools/bench.sh [--quick | --full]" >&2; exit 2 ;;
esac

tools/deps.sh lua-curl lua-http wrk
make -s build-all >/dev/null

export LUA_PATH="lua/?.lua;lua/?/init.lua;spec/support/?.lua;;"
for lua in lua5.4 luajit; do
    echo "== bench/decode.lua under $lua"
    LUA_CPATH="build/$lua/?.so;;" "$lua" bench/decode.lua
    echo
done
echo "== bench/transport.lua under lua5.4"
lua5.4 bench/transport.lua
echo
echo "== bench/e2e.lua $mode"
lua5.4 bench/e2e.lua "$mode"
echo
echo "== bench/openresty.lua"
luajit bench/openresty.lua
echo
echo "== bench/network.lua"
lua5.4 bench/network.lua
