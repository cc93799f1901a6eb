#!/bin/sh
# Installs the rock with `luarocks make` into a private tree, offline, for the
# given interpreter (lua5.4 or luajit), then loads it from that tree.
set -eu
cd "$(dirname "$0")/.."
lua=${1:-lua5.4}
tree=$(pwd)/build/rocktree-$lua
multiarch=$(gcc -print-multiarch)
case "$lua" in
    luajit) set -- --lua-version=5.1 LUA_INCDIR=/usr/include/luajit-2.1 ;;
    *) set -- --lua-version=5.4 LUA_INCDIR=/usr/include/lua5.4 ;;
esac
rm -rf "$tree"
luarocks make --tree "$tree" --deps-mode=none "$@" \
    CURL_INCDIR="/usr/include/$multiarch" CURL_LIBDIR="/usr/lib/$multiarch" \
    lua-prefect-scm-1.rockspec >"$tree.log" 2>&1 || {
    cat "$tree.log" >&2
    exit 1
}
# The rockspec's build compiles prefect.core in one call: no object file in csrc/.
if ls csrc/*.o >/dev/null 2>&1; then
    echo "rock: luarocks make left object files in csrc/:" csrc/*.o >&2
    exit 1
fi
ver=$(echo "$1" | sed 's/--lua-version=//')
LUA_PATH="$tree/share/lua/$ver/?.lua;$tree/share/lua/$ver/?/init.lua;;" \
LUA_CPATH="$tree/lib/lua/$ver/?.so;;" \
    "$lua" -e 'local p = require("prefect"); assert(require("prefect.core").decode("[1]")[1] == 1)
               io.write("rock: lua-prefect ", p._VERSION, " installed and loaded under ", _VERSION, "\n")'
