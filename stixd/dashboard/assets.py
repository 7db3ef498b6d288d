"""The dashboard's two static files (one script, one style sheet), shipped inside the package:
read once, named by their content's hash so a browser keeps them for good (`immutable`), and
gzipped once for the browsers that take it."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

STATIC = "/dashboard/static/"
FILES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    content_type: str


def _load() -> dict[str, Asset]:
    found = {}
    for name, content_type in FILES.items():
        body = resources.files("stixd.dashboard").joinpath("static", name).read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:16]
        found[name] = Asset(body, gzip.compress(body, 9, mtime=0), f'"{digest}"', content_type)
    return found


class Assets:
    """The files by name, and the URL of each (`urls`): `/dashboard/static/app.js?v=HASH`."""

    def __init__(self) -> None:
        self.files = _load()
        self.urls = {
            name.rsplit(".", 1)[1]: f"{STATIC}{name}?v={asset.etag.strip(chr(34))}"
            for name, asset in self.files.items()
        }

    def get(self, path: str) -> Asset | None:
        return self.files.get(path[len(STATIC) :]) if path.startswith(STATIC) else None
