"""moto's server whose S3 buckets can be born in the past: ``python -m tests.moto_clock FILE
ARGS...`` runs ``moto.server`` with ARGS, and every bucket made while FILE holds a number of
seconds is dated that many seconds earlier (its ``CreationDate``), so a test can make a bucket
that is old by the emulator's own clock without waiting. Only the creation date moves; every
other answer is moto's own.

Keys can be revoked too: a request signed with an access key id listed (one a line) in the file
``revoked`` beside FILE is refused (403 InvalidAccessKeyId) as AWS refuses expired or deleted
keys, which moto itself never does; a test proves that way which keys a client signs with."""

from __future__ import annotations

import datetime
import re
import sys
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


def revocable(revoked: Path) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    serve = DomainDispatcherApplication.__call__

    def call(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        found = re.search(r"Credential=([^/,\s]+)", environ.get("HTTP_AUTHORIZATION", ""))
        try:
            refused = set(revoked.read_text().split())
        except OSError:
            refused = set()
        if found is None or found.group(1) not in refused:
            return serve(self, environ, start_response)
        body = (
            b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidAccessKeyId</Code>"
            b"<Message>The AWS Access Key Id you provided does not exist in our records."
            b"</Message></Error>"
        )
        start_response("403 Forbidden", [("Content-Type", "application/xml")])
        return [body]

    DomainDispatcherApplication.__call__ = call  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    backdate(Path(argv[0]))
    revocable(Path(argv[0]).with_name("revoked"))
    from moto.server import main as serve

    serve(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
