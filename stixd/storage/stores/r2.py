"""R2's temporary credentials: keys a node's rclone gets for one bucket, from Cloudflare's API.

``POST {api}/accounts/{account}/r2/temp-access-credentials`` (``Authorization: Bearer`` an API
token that may do so) with the bucket, the access key id of the R2 keys stix itself uses (the
parent: the temporary keys can do no more than it), ``object-read-write`` and a life in seconds
(at most 7 days) answers ``{"success": true, "result": {"accessKeyId", "secretAccessKey",
"sessionToken"}}``: S3 keys that reach that bucket only. The token is ``storage.r2.api_token``,
else ``CLOUDFLARE_API_TOKEN``; the account ``storage.r2.account_id``, else the one in the
endpoint's host (``https://ACCOUNT.r2.cloudflarestorage.com``), else SkyPilot's
``~/.cloudflare/accountid``. Every answer is read as hostile: bounded in time and size, and
anything but the documented shape is one line of ``StoreError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import anyio

from stixd.storage.stores.base import StoreError, one_line

API = "https://api.cloudflare.com/client/v4"
R2_MIN_S, R2_MAX_S = 900, 604800
"""The lives stix asks for (Cloudflare allows up to 7 days)."""
ASK_WITHIN_S = 30.0
"""The whole call, answer read included: Cloudflare answers in well under a second."""
MAX_ANSWER_BYTES = 64 << 10
PERMISSION = "object-read-write"
_ACCOUNT = re.compile(r"[0-9a-f]{32}")
_HOST = re.compile(r"([0-9a-f]{32})\.(?:[a-z]{2,8}\.)?r2\.cloudflarestorage\.com")
_KEYS = {"accessKeyId": "access_key_id", "secretAccessKey": "secret_access_key"}
_KEYS |= {"sessionToken": "session_token"}
_KEY_TEXT = re.compile(r"[\x21-\x7e]{1,4096}")


def api_token(section: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    found = str(section.get("api_token") or env.get("CLOUDFLARE_API_TOKEN") or "").strip()
    return found or None


def account_id(section: Mapping[str, Any], env: Mapping[str, str], endpoint: str) -> str | None:
    """The Cloudflare account of the R2 endpoint (None when nothing names it)."""
    if section.get("account_id"):
        return str(section["account_id"])
    found = _HOST.fullmatch(urlsplit(endpoint).hostname or "")
    if found is not None:
        return found.group(1)
    path = Path(env.get("HOME") or Path.home()) / ".cloudflare" / "accountid"
    try:
        text = path.read_text(errors="replace")[:200].strip()
    except OSError:
        return None
    return text if _ACCOUNT.fullmatch(text) else None


async def temp_credentials(
    session: aiohttp.ClientSession,
    api: str,
    token: str,
    account: str,
    bucket: str,
    parent: str,
    seconds: int,
) -> dict[str, str]:
    """Keys for ``bucket`` alone lasting ``seconds``, as rclone's config names them."""
    url = f"{api.rstrip('/')}/accounts/{quote(account, safe='')}/r2/temp-access-credentials"
    body = {
        "bucket": bucket,
        "parentAccessKeyId": parent,
        "permission": PERMISSION,
        "ttlSeconds": seconds,
    }
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with anyio.fail_after(ASK_WITHIN_S):
            async with session.post(url, json=body, headers=headers) as answer:
                status = answer.status
                raw = await answer.content.read(MAX_ANSWER_BYTES + 1)
    except TimeoutError:
        raise StoreError(f"Cloudflare's API did not answer within {ASK_WITHIN_S:g} s") from None
    except aiohttp.ClientError as exc:
        text = one_line(exc, 200) or type(exc).__name__
        raise StoreError(f"Cloudflare's API is unreachable: {text}") from None
    if len(raw) > MAX_ANSWER_BYTES:
        raise StoreError(f"Cloudflare's API answered more than {MAX_ANSWER_BYTES >> 10} KiB")
    return _keys(raw, status)


def _keys(raw: bytes, status: int) -> dict[str, str]:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # garbage, or nested past the parser's depth
        raise StoreError(f"Cloudflare's API answered garbage (HTTP {status})") from None
    if not isinstance(doc, dict):
        raise StoreError(f"Cloudflare's API answered garbage (HTTP {status})")
    if doc.get("success") is not True or not 200 <= status < 300:
        raise StoreError(f"Cloudflare refused temporary credentials: {_errors(doc, status)}")
    result = doc.get("result")
    keys = {}
    for field, name in _KEYS.items():
        value = result.get(field) if isinstance(result, dict) else None
        if not isinstance(value, str) or not _KEY_TEXT.fullmatch(value):
            raise StoreError(f"Cloudflare's API answered no usable {field}")
        keys[name] = value
    return keys


def _errors(doc: dict[str, Any], status: int) -> str:
    errors = doc.get("errors")
    said = []
    for error in errors[:3] if isinstance(errors, list) else []:
        if isinstance(error, dict):
            said.append(f"{one_line(error.get('code'), 20)}: {one_line(error.get('message'), 200)}")
    return "; ".join(said) or f"HTTP {status}, no error said"
