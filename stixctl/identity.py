"""`stixctl users create NAME --role ROLE | ls | delete NAME | role NAME ROLE` and
`stixctl tokens create USER [--expires DAYS] [--name LABEL] | ls [USER] | revoke ID | rotate ID`.

A new or rotated token is printed once, alone on stdout (so `T=$(stixctl tokens create bob)`
keeps it), with a note on stderr; nothing stores it on this side.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from stixctl.output import err, print_json
from stixproto import messages as m
from stixproto.errors import InvalidRequest

ROLES = ("admin", "user", "viewer")
USER_ACTIONS = ("create", "ls", "delete", "role")
TOKEN_ACTIONS = ("create", "ls", "revoke", "rotate")


def add_users_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("action", choices=USER_ACTIONS)
    s.add_argument("name", nargs="?", metavar="NAME")
    # `users role NAME ROLE`: the same destination as `users create NAME --role ROLE`
    s.add_argument(
        "role", nargs="?", default=argparse.SUPPRESS, metavar="ROLE", help="role: the new role"
    )
    s.add_argument("--role", dest="role", choices=ROLES, default=None, help="create: the role")
    s.add_argument("-y", "--yes", action="store_true", help="delete: do not ask first")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_users)


def add_tokens_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("action", choices=TOKEN_ACTIONS)
    s.add_argument("user", nargs="?", metavar="USER|ID", help="create, ls: a user; else a token")
    s.add_argument(
        "--expires",
        dest="expires_days",
        type=int,
        metavar="DAYS",
        help="create: days it lasts (else for ever)",
    )
    s.add_argument("--name", metavar="LABEL", help="create: tells a user's tokens apart")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_tokens)


def _needs(value: str | None, what: str, usage: str) -> str:
    if not value:
        raise InvalidRequest(f"name the {what}: `stixctl {usage}`")
    return value


def _role(value: str | None) -> Any:
    if value is None:
        raise InvalidRequest("name the role: `stixctl users role NAME admin|user|viewer`")
    if value not in ROLES:
        raise InvalidRequest(f"a role is one of {', '.join(ROLES)}, not {value!r}")
    return value


def user_request(a: argparse.Namespace) -> Any:
    if a.action == "ls":
        return m.UsersList()
    if a.action == "create":
        name = _needs(a.name, "user", "users create NAME --role ROLE")
        return m.UsersCreate(name=name, role=_role(a.role or "user"))
    if a.action == "delete":
        return m.UsersDelete(name=_needs(a.name, "user", "users delete NAME"))
    name = _needs(a.name, "user", "users role NAME ROLE")
    return m.UsersRole(name=name, role=_role(a.role))


def cmd_users(home: Path, a: argparse.Namespace) -> int:
    from stixctl import confirm
    from stixctl.client import call

    req = user_request(a)
    if isinstance(req, m.UsersDelete):
        confirm.ask(f"Delete user {req.name} and revoke their tokens?", a.yes or a.json)
    reply = call(home, req)
    if a.json:
        print_json(reply.users if isinstance(reply, m.UserList) else reply)
    elif isinstance(reply, m.OkReply):
        print(reply.message)
    elif isinstance(req, m.UsersList):
        print(render_users(reply.users))
    else:
        user = reply.users[0]
        print(f"User {user.name} has role {user.role}.")
    return 0


def token_request(a: argparse.Namespace) -> Any:
    if a.action == "ls":
        return m.TokensList(user=a.user)
    if a.action == "create":
        user = _needs(a.user, "user", "tokens create USER [--expires DAYS]")
        return m.TokensCreate(user=user, expires_days=a.expires_days, name=a.name)
    token_id = _needs(a.user, "token's ID", f"tokens {a.action} ID")
    return (m.TokensRevoke if a.action == "revoke" else m.TokensRotate)(token_id=token_id)


def cmd_tokens(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call

    reply = call(home, token_request(a))
    if a.json:
        print_json(reply.tokens if isinstance(reply, m.TokenList) else reply)
    elif isinstance(reply, m.TokenIssued):
        print(reply.secret)
        t = reply.token
        until = f"expires {_when(t.expires_at)}" if t.expires_at else "never expires"
        err(f"Token {t.id} of {t.user} ({until}): shown this once, store it now.")
    elif a.action == "ls":
        print(render_tokens(reply.tokens))
    else:
        t = reply.tokens[0]
        err(f"Revoked token {t.id} of {t.user}.")
    return 0


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def token_state(t: m.TokenRecord, now: float) -> str:
    if t.revoked_at is not None:
        return "REVOKED"
    if t.expires_at is not None and t.expires_at <= now:
        return "EXPIRED"
    return "ACTIVE"


def render_users(users: list[m.UserRecord]) -> str:
    if not users:
        return "No users. Create one: stixctl users create NAME --role admin|user|viewer"
    from stixctl.render import ago, table

    now = time.time()
    rows = [[u.name, u.role, str(u.tokens), ago(u.created_at, now)] for u in users]
    return table(["NAME", "ROLE", "TOKENS", "CREATED"], rows)


def render_tokens(tokens: list[m.TokenRecord]) -> str:
    if not tokens:
        return "No tokens. Make one: stixctl tokens create USER [--expires DAYS]"
    from stixctl.render import ago, table

    now = time.time()
    rows = [
        [
            t.id,
            f"stix_{t.id}_…",
            t.user,
            t.name or "-",
            ago(t.created_at, now),
            _when(t.expires_at) if t.expires_at else "never",
            ago(t.last_used_at, now),
            token_state(t, now),
        ]
        for t in tokens
    ]
    headers = ["ID", "PREFIX", "USER", "NAME", "CREATED", "EXPIRES", "LAST USED", "STATUS"]
    return table(headers, rows)
