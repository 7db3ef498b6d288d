"""How a replica proves a request it forwards is its own (stixd/control/forward.py): the
deployment's replica secret, and the principal it took the request from; over HTTP in two
headers, over the Unix socket in the connection's hello (`Hello.replica`, `Hello.on_behalf`).
The owner trusts that principal only behind the secret, so no client token (nor a plain client
of the socket) poses as one, and checks the request again as that principal's: its role, and
the local paths it names (the forwarding replica handed the owner those files first: they are
the principal's uploads there, stixd/control/handoff.py)."""

from __future__ import annotations

import hmac
from typing import Any

from stixd.app import App
from stixd.control.identity import Principal, Role, authorize
from stixd.control.remote_paths import refuse_local_paths
from stixd.control.uploads import user_root
from stixproto.errors import Unauthenticated

REPLICA_HEADER = "Stix-Replica"
"""The deployment's replica secret: this request comes from a replica, not a client."""
ON_BEHALF_HEADER = "Stix-On-Behalf-Of"
"""`NAME ROLE` of the principal the forwarding replica took the request from."""
MAX_NAME = 200


def forwarded_principal(secret: str | None, given: str, on_behalf: str) -> Principal:
    """Who a request another replica forwarded is asked for: the `Stix-On-Behalf-Of`
    principal, trusted only when `given` is the deployment's replica secret (compared in
    constant time). `Unauthenticated` otherwise, without the header's value in the message."""
    if secret is None or not hmac.compare_digest(given.encode(), secret.encode()):
        raise Unauthenticated(
            f"the request's {REPLICA_HEADER} header is not this deployment's replica secret: "
            "only another stixd replica of the same database may forward requests; a client "
            "sends its token as `Authorization: Bearer TOKEN`"
        )
    name, _, role = on_behalf.partition(" ")
    try:
        chosen = Role(role)
    except ValueError:
        chosen = None
    if not name or len(name) > MAX_NAME or chosen is None:
        raise Unauthenticated(f"a forwarded request needs {ON_BEHALF_HEADER}: NAME ROLE")
    return Principal(name=name, role=chosen)


def check_forwarded(app: App, principal: Principal, req: Any) -> None:
    """The owner's own checks of a forwarded request: the principal's role may send it, and
    it names no local path but that principal's uploads on this replica."""
    authorize(principal, req)
    refuse_local_paths(req, user_root(app, principal.name))
