#!/bin/sh
# Starts nginx in the foreground on examples/openresty/nginx.conf, with the
# port and the pid file as parameters:
#   examples/openresty/run.sh [--port N] [--pid FILE]
# (defaults: the ones nginx.conf names, 8080 and /tmp/lua-prefect-example-nginx.pid).
# It writes a copy of nginx.conf with those two lines changed to a temporary
# directory, and removes it when nginx exits. Started as root, nginx's workers
# run as nobody, who must be able to read the checkout.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
port=8080
pid=/tmp/lua-prefect-example-nginx.pid
while [ $# -gt 0 ]; do
    case "$1" in
        --port) port=${2:-}; shift 2 || { echo "run.sh: --port needs a value" >&2; exit 2; } ;;
        --pid) pid=${2:-}; shift 2 || { echo "run.sh: --pid needs a value" >&2; exit 2; } ;;
        --help|-h) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$port" in
    '' | *[!0-9]*) echo "run.sh: --port needs a number from 1 to 65535, got '$port'" >&2; exit 2 ;;
esac
if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    echo "run.sh: --port needs a number from 1 to 65535, got '$port'" >&2
    exit 2
fi
case "$pid" in
    /*) ;;
    *) echo "run.sh: --pid needs an absolute path, got '$pid'" >&2; exit 2 ;;
esac
case "$pid" in
    *[\;\ \	\'\"\\]*) echo "run.sh: --pid cannot hold spaces, quotes, backslashes or ';'" >&2; exit 2 ;;
esac

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed -e "s|^\( *\)listen 127.0.0.1:8080;|\1listen 127.0.0.1:$port;|" \
    -e "s|^pid /tmp/lua-prefect-example-nginx.pid;|pid $pid;|" \
    "$here/nginx.conf" >"$dir/nginx.conf"
grep -qF "listen 127.0.0.1:$port;" "$dir/nginx.conf" && grep -qxF "pid $pid;" "$dir/nginx.conf" || {
    echo "run.sh: nginx.conf no longer has the listen and pid lines this script sets" >&2
    exit 1
}
# Not exec: the trap above removes the copy once nginx has stopped.
status=0
nginx -p "$here/" -c "$dir/nginx.conf" || status=$?
exit $status
