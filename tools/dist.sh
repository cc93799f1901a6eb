#!/bin/sh
# Builds the source rock of a versioned rockspec, as LuaRocks users install it:
#   tools/dist.sh [rockspecs/lua-prefect-V-R.rockspec]   (default: the newest under rockspecs/)
# into $DIST_DIR (default build/dist):
# writes build/dist/lua-prefect-V.tar.gz (the tree as the v<V> tag's archive holds it: every
# tracked file, under lua-prefect-V/) and build/dist/lua-prefect-V-R.src.rock (that archive and
# the rockspec), which `luarocks install` builds with no network. The copy in the archive says
# version V in lua/prefect/client.lua, as the tagged commit will.
set -eu
cd "$(dirname "$0")/.."
rockspec=${1:-$(ls rockspecs/lua-prefect-*.rockspec | sort -V | tail -n 1)}
name=$(basename "$rockspec" .rockspec)
release=${name#lua-prefect-}
version=${release%-*}
case "$version" in
    [0-9]*.[0-9]*.[0-9]*) ;;
    *) echo "dist: $rockspec is not a versioned rockspec (lua-prefect-X.Y.Z-R.rockspec)" >&2; exit 1 ;;
esac
git rev-parse --git-dir >/dev/null 2>&1 || { echo "dist: needs a git checkout (it packs the tracked files)" >&2; exit 1; }

out=${DIST_DIR:-build/dist}
stage=$out/stage
rm -rf "$stage"
mkdir -p "$stage/lua-prefect-$version"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$stage/lua-prefect-$version"
options="$stage/lua-prefect-$version/lua/prefect/options.lua"
grep -q '^options.VERSION = "scm-1"$' "$options" || {
    echo "dist: lua/prefect/options.lua has no line options.VERSION = \"scm-1\" to set" >&2
    exit 1
}
sed -i "s/^options.VERSION = \"scm-1\"\$/options.VERSION = \"$version\"/" "$options"
tar -C "$stage" --owner=0 --group=0 -czf "$out/lua-prefect-$version.tar.gz" "lua-prefect-$version"
rm -rf "$stage"
mkdir -p "$stage"
cp "$rockspec" "$stage/$name.rockspec"
cp "$out/lua-prefect-$version.tar.gz" "$stage/"
rm -f "$out/$name.src.rock"
(cd "$stage" && zip -q -X "../$name.src.rock" "$name.rockspec" "lua-prefect-$version.tar.gz")
rm -rf "$stage"
echo "dist: $out/$name.src.rock ($out/lua-prefect-$version.tar.gz inside)"
