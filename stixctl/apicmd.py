"""`stixctl api start|stop|status|info|login|logout`: the HTTP API server, SkyPilot's meanings.

`start` and `stop` act on this machine's daemon (over its socket, whatever the login says);
`login` verifies an endpoint and token and remembers them, so every later command goes there;
`status` and `info` describe whichever server commands go to now.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stixctl.client import call, ensure_started
from stixctl.endpoint import (
    TOKEN_ENV,
    Remote,
    check_token,
    forget_login,
    normalize,
    remote_target,
    save_login,
)
from stixctl.output import err
from stixproto import messages as m
from stixproto.errors import DaemonUnavailable, InvalidRequest
from stixproto.paths import socket_path

ACTIONS = ("start", "stop", "status", "info", "login", "logout")


def add_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("action", choices=ACTIONS)
    s.add_argument("endpoint", nargs="?", metavar="ENDPOINT", help="login: http(s)://HOST:PORT")
    s.add_argument("--host", help="start: the address to listen on (default: the last, or config)")
    s.add_argument("--port", type=int, help="start: the TCP port (0 picks a free one)")
    s.add_argument("--token", help=f"login: the token (else ${TOKEN_ENV}, else asked for)")
    s.set_defaults(fn=run)


def run(home: Path, a: argparse.Namespace) -> int:
    if a.endpoint is not None and a.action != "login":
        raise InvalidRequest(f"api {a.action} takes no ENDPOINT (only `api login` does)")
    if a.action == "start":
        return _start(home, a.host, a.port)
    if a.action == "stop":
        call(home, m.ApiStop(), local=True)
        print("stixd no longer serves the HTTP API (its socket still answers)")
        return 0
    if a.action == "status":
        return _status(home)
    if a.action == "info":
        return _info(home)
    if a.action == "login":
        return _login(home, a.endpoint, a.token)
    forgotten = forget_login(home)
    if forgotten is None:
        print("not logged in to an API server; commands use the local stixd")
    else:
        print(f"logged out of {forgotten.endpoint}; commands use the local stixd again")
    return 0


def _start(home: Path, host: str | None, port: int | None) -> int:
    if port is not None and not 0 <= port <= 65535:
        raise InvalidRequest(f"api start: --port must be from 0 to 65535, not {port}")
    req = m.ApiServe(host=host, port=port)
    ensure_started(home)
    info = call(home, req, local=True)
    print(
        f"stixd serves the HTTP API on {info.serving} (also after restarts, until `stixctl api "
        f"stop`); elsewhere: `stixctl api login {info.serving} --token T`"
    )
    return 0


def _status(home: Path) -> int:
    remote = remote_target(home)
    if remote is None:
        try:
            info = call(home, m.ApiInfo(), autostart=False, local=True)
        except DaemonUnavailable:
            print(f"local stixd on {socket_path(home)}: not running")
            return 1
        http = f"serving HTTP on {info.serving}" if info.serving else "not serving HTTP"
        print(f"local stixd {info.version} on {socket_path(home)}: running, {http}")
        return 0
    from stixctl.http_client import health

    try:
        report = health(remote)
    except (DaemonUnavailable, InvalidRequest) as exc:
        print(f"API server {remote.endpoint} (from {remote.source}): not answering: {exc.message}")
        return 1
    except Exception as exc:  # the one line, whatever a stranger answered
        print(f"API server {remote.endpoint} (from {remote.source}): not answering: {exc}")
        return 1
    print(
        f"API server {remote.endpoint} (from {remote.source}): {report.get('status', 'up')}, "
        f"stixd {report.get('version', '?')} (protocol {report.get('protocol', '?')})"
    )
    return 0


def _info(home: Path) -> int:
    remote = remote_target(home)
    info = call(home, m.ApiInfo(), autostart=False)
    where = remote.endpoint if remote else f"local socket {socket_path(home)}"
    http = f"; it serves HTTP on {info.serving}" if info.serving and not remote else ""
    print(
        f"stixd {info.version} (protocol {info.protocol}) at {where}; "
        f"you are {info.user} ({info.role}){http}"
    )
    return 0


def _login(home: Path, endpoint: str | None, token: str | None) -> int:
    if endpoint is None:
        raise InvalidRequest("api login: give the ENDPOINT, e.g. http://HOST:46580")
    url = normalize(endpoint)
    token = check_token(token or os.environ.get(TOKEN_ENV) or _ask_token(url))
    remote = Remote(url, token, "login")
    from stixctl.client import interpret
    from stixctl.http_client import health, http_frames

    health(remote)  # a proxy's page or another service is told apart before the token is sent
    frames = http_frames(remote, _body(m.ApiInfo()))
    info = interpret(next(frames), m.ApiInfo)  # its one reply, or the refusal it raises
    frames.close()
    if not isinstance(info, m.ApiServerInfo):
        raise DaemonUnavailable(f"{url} answered {type(info).__name__} to who-am-I; check it")
    save_login(home, url, token)
    print(
        f"logged in to {url} as {info.user} ({info.role}); stixctl commands go there now "
        "(`stixctl api logout` to use the local stixd again)"
    )
    return 0


def _body(request: object) -> bytes:
    from stixproto.edge import request_body

    return request_body(request)


def _ask_token(endpoint: str) -> str:
    if not sys.stdin.isatty():
        raise InvalidRequest(
            f"api login: give the token with --token T or ${TOKEN_ENV} "
            "(an admin makes one with `stixctl tokens create USER`)"
        )
    import getpass

    token = getpass.getpass(f"Token for {endpoint}: ").strip()
    if not token:
        err("stixctl: no token given")
        raise InvalidRequest("api login: a token is needed; ask an admin for one")
    return token
