#!/bin/sh
# Installs the Debian packages the build and the tests use, only those missing.
# Usage: tools/deps.sh [extra-package ...]
set -eu

packages="gcc make pkg-config ca-certificates openssl curl
lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev
lua-cjson lua-busted lua-socket lua-sec lua-zlib lua-check luarocks git zip unzip lua-ldoc
libcurl4-openssl-dev clang clang-format valgrind libclang-rt-14-dev
nginx libnginx-mod-http-lua postgresql python3-venv $*"

missing=""
for p in $packages; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing" >&2
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "deps: missing packages:$missing; run this as root or install them" >&2
        exit 1
    fi
else
    SUDO=
fi
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
