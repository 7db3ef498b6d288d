"""The dashboard's HTML: a page's first view rendered on the server from its data (so the first
data is on screen when the HTML is, before any script runs), the login form and error pages.
Every text goes through `html.escape`; nothing here is a script, the Content-Security-Policy
allows only the one static script file.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

NAV = [
    ("clusters", "Clusters"),
    ("jobs", "Jobs"),
    ("managed-jobs", "Managed jobs"),
    ("services", "Services"),
    ("infra", "Infra"),
]
ADMIN_NAV = [("users", "Users")]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SAFE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
_STATE_CLASS = re.compile(r"[^a-z_]")


def state_class(text: str) -> str:
    return "st-" + _STATE_CLASS.sub("", text.lower())[:24]


def cell(value: Any) -> str:
    if isinstance(value, dict):
        text = escape(str(value.get("t", "")))
        if "h" in value:
            return f'<a href="{escape(str(value["h"]))}">{text}</a>'
        if value.get("s"):
            return f'<span class="badge {state_class(str(value.get("t", "")))}">{text}</span>'
        return text
    return escape(str(value))


def section(data: dict[str, Any]) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in data["columns"])
    rows = data["rows"]
    if rows:
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    else:
        span = len(data["columns"]) or 1
        body = f'<tr><td class="empty" colspan="{span}">{escape(data["empty"])}</td></tr>'
    title = escape(data["title"])
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f"<section><h2>{title}</h2>{table}</section>"


def pager(data: dict[str, Any] | None) -> str:
    if not data:
        return ""
    parts = [
        f'<a href="{escape(url)}">{label}</a>' if url else f"<span>{label}</span>"
        for label, url in (("&larr; newer", data.get("newer")), ("older &rarr;", data.get("older")))
    ]
    return f'<nav class="pager">{" ".join(parts)}</nav>'


def main_html(page: dict[str, Any]) -> str:
    return "".join(section(s) for s in page["sections"]) + pager(page.get("pager"))


def _head(title: str, assets: dict[str, str], script: bool) -> str:
    js = f'<script src="{assets["js"]}" defer></script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>stix &middot; {escape(title)}</title>"
        f'<link rel="icon" href="data:,"><link rel="stylesheet" href="{assets["css"]}">{js}</head>'
    )


def page_html(page: dict[str, Any], api: str, user: str, role: str, assets: dict[str, str]) -> str:
    nav = NAV + (ADMIN_NAV if role == "admin" else [])
    here = page["page"]
    links = "".join(
        f'<a href="/dashboard/{slug}"{" class=on" if slug == here else ""}>{label}</a>'
        for slug, label in nav
    )
    logs = page.get("logs")
    data = f' data-api="{escape(api)}" data-watch="{escape(" ".join(page["watch"]))}"'
    if logs:
        data += f' data-log-cluster="{escape(logs["cluster"])}" data-log-job="{logs["job"]}"'
    log_box = '<section><h2>Log</h2><pre id="log"></pre></section>' if logs else ""
    return (
        _head(page["title"], assets, script=True)
        + f"<body{data}><header><b>stix</b><nav>{links}</nav>"
        + '<span id="live" class="live">connecting</span>'
        + f'<span class="me">{escape(user)} ({escape(role)})</span>'
        + '<form method="post" action="/dashboard/logout"><button>Log out</button></form></header>'
        + f"<h1>{escape(page['title'])}</h1>"
        + f'<main id="main">{main_html(page)}</main>{log_box}</body></html>'
    )


def login_html(assets: dict[str, str], message: str = "") -> str:
    note = f'<p class="error">{escape(message)}</p>' if message else ""
    return (
        _head("Log in", assets, script=False)
        + '<body class="login"><form method="post" action="/dashboard/login"><h1>stix</h1>'
        + "<label>API token <input name=token type=password autocomplete=off required "
        + 'placeholder="stix_..."></label><button>Log in</button>'
        + f"{note}<p>An admin makes a token with <code>stixctl tokens create USER</code>.</p>"
        + "</form></body></html>"
    )


def error_html(assets: dict[str, str], status: int, message: str) -> str:
    return (
        _head("Error", assets, script=False)
        + '<body><header><b>stix</b><nav><a href="/dashboard/clusters">Clusters</a></nav></header>'
        + f'<h1>{status}</h1><p class="error">{escape(message)}</p></body></html>'
    )
