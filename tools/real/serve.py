"""Runs a real Prefect server for the tests, on 127.0.0.1 only.

    serve.py --home DIR [--db URL] [--auth-string U:P] [--csrf SECONDS]

Binds a free loopback port itself, serves Prefect's own app factory there with
uvicorn (webserver only: no background service rewrites the data under a test,
no UI, no telemetry), and prints one line "listening http://127.0.0.1:PORT/api"
once /api/health answers. It exits when its standard input reaches end of file,
so a test process that dies, however it dies, takes the server with it.
"""

import argparse
import os
import signal
import socket
import sys
import threading
import time
import urllib.request


def settings_env(args):
    env = {
        "PREFECT_HOME": args.home,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT__SERVER_WEBSERVER_ONLY": "1",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": args.db
        or "sqlite+aiosqlite:///" + os.path.join(args.home, "prefect.db"),
    }
    if args.auth_string:
        env["PREFECT_SERVER_API_AUTH_STRING"] = args.auth_string
    if args.csrf is not None:
        env["PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED"] = "true"
        env["PREFECT_SERVER_API_CSRF_TOKEN_EXPIRATION"] = "PT%gS" % args.csrf
    return env


def wait_healthy(url, server, deadline):
    while time.monotonic() < deadline:
        if server.started:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
        time.sleep(0.2)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", required=True)
    ap.add_argument("--db")
    ap.add_argument("--auth-string")
    ap.add_argument("--csrf", type=float, metavar="SECONDS")
    ap.add_argument("--start-timeout", type=float, default=120)
    args = ap.parse_args()

    os.makedirs(args.home, exist_ok=True)
    for key in [k for k in os.environ if k.startswith("PREFECT_")]:
        del os.environ[key]
    os.environ.update(settings_env(args))

    import uvicorn
    from prefect.server.api.server import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    url = "http://127.0.0.1:%d/api" % port

    config = uvicorn.Config(create_app(webserver_only=True, final=True), log_level="warning",
                            lifespan="on", timeout_keep_alive=5)
    server = uvicorn.Server(config)

    def announce():
        if wait_healthy(url, server, time.monotonic() + args.start_timeout):
            print("listening " + url, flush=True)
        else:
            print("serve.py: no answer from %s/health in %.0f s" % (url, args.start_timeout),
                  file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGTERM)

    def watch_stdin():
        while sys.stdin.buffer.read(4096):
            pass
        server.should_exit = True

    threading.Thread(target=announce, daemon=True).start()
    threading.Thread(target=watch_stdin, daemon=True).start()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
