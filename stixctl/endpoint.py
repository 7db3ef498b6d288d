"""Which server a command talks to: the local socket, or a remote API server.

Remote when `STIX_API_SERVER` is set (with `STIX_API_TOKEN`), or after `stixctl api login`
(``<home>/api_login.json``, mode 0600: the endpoint and its token). Asked on every command, so
it costs one failed `open` when neither is there and imports nothing that talks HTTP.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import msgspec

from stixproto.errors import InvalidRequest

SERVER_ENV = "STIX_API_SERVER"
TOKEN_ENV = "STIX_API_TOKEN"
LOGIN_FILE = "api_login.json"
MAX_ENDPOINT = 2048
MAX_TOKEN = 4096


class Remote(NamedTuple):
    endpoint: str
    """``http(s)://host[:port][/prefix]``, without a trailing slash."""
    token: str | None
    source: str
    """Where it came from: ``environment`` or the login file."""


class Login(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    endpoint: str
    token: str


def remote_target(home: Path) -> Remote | None:
    """The remote server this command goes to, or None for the local daemon."""
    server = os.environ.get(SERVER_ENV)
    login = _read_login(home)
    if server:
        endpoint = normalize(server)
        token = os.environ.get(TOKEN_ENV) or None
        if token is not None:
            check_token(token)
        if token is None and login is not None and login.endpoint == endpoint:
            token = login.token
        return Remote(endpoint, token, f"${SERVER_ENV}")
    if login is not None:
        return Remote(login.endpoint, login.token, str(home / LOGIN_FILE))
    return None


def check_token(token: str) -> str:
    """A token as an HTTP header can carry it: printable ASCII, no spaces, bounded."""
    if len(token) > MAX_TOKEN or not token.isascii() or not token.isprintable() or " " in token:
        raise InvalidRequest(
            "the API token is not one a server issued (printable ASCII without spaces); "
            "check --token or $" + TOKEN_ENV
        )
    return token


def _read_login(home: Path) -> Login | None:
    try:
        with open(home / LOGIN_FILE, "rb") as f:
            data = f.read(MAX_ENDPOINT + MAX_TOKEN + 100)
    except (FileNotFoundError, NotADirectoryError):  # a home that cannot exist says so later
        return None
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read {home / LOGIN_FILE}: {exc.strerror}; `stixctl api logout` forgets it"
        ) from None
    try:
        return msgspec.json.decode(data, type=Login)
    except msgspec.DecodeError:
        raise InvalidRequest(
            f"{home / LOGIN_FILE} is not a login stixctl wrote; "
            "run `stixctl api logout`, then `stixctl api login ENDPOINT` again"
        ) from None


def save_login(home: Path, endpoint: str, token: str) -> Path:
    """Write the login file, readable by its owner only from its first byte."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home / LOGIN_FILE
    partial = home / (LOGIN_FILE + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(msgspec.json.encode(Login(endpoint=endpoint, token=token)))
    os.replace(partial, path)
    return path


def forget_login(home: Path) -> Login | None:
    """Delete the login file; the login it held, if any."""
    try:
        login = _read_login(home)
    except InvalidRequest:
        login = None
    (home / LOGIN_FILE).unlink(missing_ok=True)
    return login


def normalize(endpoint: str) -> str:
    """``host:port`` → ``http://host:port``; the scheme checked, the trailing slash dropped."""
    text = endpoint.strip()
    if not text or len(text) > MAX_ENDPOINT or any(c.isspace() or ord(c) < 32 for c in text):
        raise InvalidRequest(
            f"API server endpoint {text[:80]!r} is not a URL; give http(s)://HOST:PORT"
        )
    if "://" not in text:
        text = f"http://{text}"
    scheme = text.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise InvalidRequest(
            f"API server endpoint {text[:80]!r}: the scheme must be http or https, not {scheme}"
        )
    if not text.split("://", 1)[1].strip("/"):
        raise InvalidRequest(f"API server endpoint {text[:80]!r} names no host")
    return text.rstrip("/")
