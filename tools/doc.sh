#!/bin/sh
# The API reference: LDoc over the modules and topics config.ld lists.
#   tools/doc.sh [DIR]    (default build/doc; open DIR/index.html)
set -eu
cd "$(dirname "$0")/.."
dir=${1:-build/doc}
command -v ldoc >/dev/null 2>&1 || { echo "doc: ldoc is missing (apt-get install lua-ldoc)" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir"
ldoc -c config.ld -d "$dir" . >"$dir.log" 2>&1 || { cat "$dir.log" >&2; rm -f "$dir.log"; exit 1; }
rm -f "$dir.log"
echo "doc: $dir/index.html"
