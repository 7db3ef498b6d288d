"""moto's server whose S3 buckets can be born in the past: ``python -m tests.moto_clock FILE
ARGS...`` runs ``moto.server`` with ARGS, and every bucket made while FILE holds a number of
seconds is dated that many seconds earlier (its ``CreationDate``), so a test can make a bucket
that is old by the emulator's own clock without waiting. Only the creation date moves; every
other answer is moto's own.

Keys can be revoked too: a request signed with an access key id listed (one a line) in the file
``revoked`` beside FILE is refused (403 InvalidAccessKeyId) as AWS refuses expired or deleted
keys, which moto itself never does; a test proves that way which keys a client signs with.

And keys can be kept to one bucket: the JSON file ``scoped`` beside FILE maps an access key id
to ``{"bucket", "expires_at", "permission"}`` (``tests.fake_r2_api`` writes it as it mints R2
temporary credentials); a request signed with such a key on any other bucket, on no bucket
(ListBuckets), after its end, or writing with a read-only permission is refused (403
AccessDenied / ExpiredToken) as R2 refuses it. moto enforces no session policy of its own."""

from __future__ import annotations

import datetime
import json
import re
import sys
import time
from pathlib import Path
from typing import Any


def backdate(clock: Path) -> None:
    from moto.s3 import models

    made = models.FakeBucket.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        try:
            back = float(clock.read_text() or 0)
        except (OSError, ValueError):
            back = 0.0
        self.creation_date -= datetime.timedelta(seconds=back)

    models.FakeBucket.__init__ = init  # type: ignore[method-assign]


def _key_id(environ: dict[str, Any]) -> str | None:
    """The access key id a request is signed with (header or presigned query)."""
    found = re.search(r"Credential=([^/,\s]+)", environ.get("HTTP_AUTHORIZATION", ""))
    if found is None:
        found = re.search(r"X-Amz-Credential=([^/%&]+)", environ.get("QUERY_STRING", ""))
    return found.group(1) if found else None


def _refusal(start_response: Any, code: str, message: str) -> list[bytes]:
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        f"<Message>{message}</Message></Error>"
    ).encode()
    start_response("403 Forbidden", [("Content-Type", "application/xml")])
    return [body]


def _scope_refuses(scoped: Path, environ: dict[str, Any], key: str) -> tuple[str, str] | None:
    try:
        scopes = json.loads(scoped.read_text() or "{}")
    except (OSError, ValueError):
        return None
    scope = scopes.get(key)
    if not isinstance(scope, dict):
        return None
    asked = environ.get("PATH_INFO", "/").lstrip("/").split("/", 1)[0]
    if asked != scope["bucket"]:
        return "AccessDenied", f"these credentials reach bucket {scope['bucket']} only"
    if time.time() >= float(scope["expires_at"]):
        return "ExpiredToken", "The provided token has expired."
    reads = environ.get("REQUEST_METHOD") in ("GET", "HEAD")
    if scope.get("permission", "").endswith("read-only") and not reads:
        return "AccessDenied", "these credentials may only read"
    return None


def enforcing(revoked: Path, scoped: Path) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    serve = DomainDispatcherApplication.__call__

    def call(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        key = _key_id(environ)
        if key is None:
            return serve(self, environ, start_response)
        try:
            refused = set(revoked.read_text().split())
        except OSError:
            refused = set()
        if key in refused:
            text = "The AWS Access Key Id you provided does not exist in our records."
            return _refusal(start_response, "InvalidAccessKeyId", text)
        out_of_scope = _scope_refuses(scoped, environ, key)
        if out_of_scope is not None:
            return _refusal(start_response, *out_of_scope)
        return serve(self, environ, start_response)

    DomainDispatcherApplication.__call__ = call  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    backdate(Path(argv[0]))
    enforcing(Path(argv[0]).with_name("revoked"), Path(argv[0]).with_name("scoped"))
    from moto.server import main as serve

    serve(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
