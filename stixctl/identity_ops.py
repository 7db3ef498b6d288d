"""The SDK's operations on users, API tokens and workspaces (`Client.users_*`, `Client.tokens_*`,
`Client.workspaces_*`), as
`stixctl.sdk_ops` builds the others: the request, and what its reply becomes."""

from __future__ import annotations

from stixctl.sdk_ops import Op
from stixproto import messages as m


def _users(reply: m.UserList) -> list[m.UserRecord]:
    return reply.users


def _one_user(reply: m.UserList) -> m.UserRecord:
    return reply.users[0]


def _tokens(reply: m.TokenList) -> list[m.TokenRecord]:
    return reply.tokens


def _one_token(reply: m.TokenList) -> m.TokenRecord:
    return reply.tokens[0]


def _issued(reply: m.TokenIssued) -> m.TokenIssued:
    return reply


def _said(reply: m.OkReply) -> str:
    return reply.message


def users_create(name: str, role: m.RoleName) -> Op[m.UserList, m.UserRecord]:
    return Op(m.UsersCreate(name=name, role=role), m.UserList, _one_user)


def users_ls() -> Op[m.UserList, list[m.UserRecord]]:
    return Op(m.UsersList(), m.UserList, _users)


def users_delete(name: str) -> Op[m.OkReply, str]:
    return Op(m.UsersDelete(name=name), m.OkReply, _said)


def users_role(name: str, role: m.RoleName) -> Op[m.UserList, m.UserRecord]:
    return Op(m.UsersRole(name=name, role=role), m.UserList, _one_user)


def tokens_create(
    user: str, expires_days: int | None, name: str | None
) -> Op[m.TokenIssued, m.TokenIssued]:
    return Op(
        m.TokensCreate(user=user, expires_days=expires_days, name=name), m.TokenIssued, _issued
    )


def tokens_ls(user: str | None) -> Op[m.TokenList, list[m.TokenRecord]]:
    return Op(m.TokensList(user=user), m.TokenList, _tokens)


def tokens_revoke(token_id: str) -> Op[m.TokenList, m.TokenRecord]:
    return Op(m.TokensRevoke(token_id=token_id), m.TokenList, _one_token)


def tokens_rotate(token_id: str) -> Op[m.TokenIssued, m.TokenIssued]:
    return Op(m.TokensRotate(token_id=token_id), m.TokenIssued, _issued)


def _one_workspace(reply: m.WorkspaceList) -> m.WorkspaceRecord:
    return reply.workspaces[0]


def workspaces_create(name: str, spec: m.WorkspaceSpec) -> Op[m.WorkspaceList, m.WorkspaceRecord]:
    return Op(m.WorkspacesCreate(name=name, spec=spec), m.WorkspaceList, _one_workspace)


def workspaces_update(name: str, spec: m.WorkspaceSpec) -> Op[m.WorkspaceList, m.WorkspaceRecord]:
    return Op(m.WorkspacesUpdate(name=name, spec=spec), m.WorkspaceList, _one_workspace)


def workspaces_delete(name: str) -> Op[m.OkReply, str]:
    return Op(m.WorkspacesDelete(name=name), m.OkReply, _said)
