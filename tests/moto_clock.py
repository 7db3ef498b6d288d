"""moto's server whose S3 buckets can be born in the past: ``python -m tests.moto_clock FILE
ARGS...`` runs ``moto.server`` with ARGS, and every bucket made while FILE holds a number of
seconds is dated that many seconds earlier (its ``CreationDate``), so a test can make a bucket
that is old by the emulator's own clock without waiting. Only the creation date moves; every
other answer is moto's own."""

from __future__ import annotations

import datetime
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


def main(argv: list[str]) -> None:
    backdate(Path(argv[0]))
    from moto.server import main as serve

    serve(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
