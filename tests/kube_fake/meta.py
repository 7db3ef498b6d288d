"""What every resource of the fake shares: API errors as Kubernetes `Status` objects, times,
resource quantities and the label and field selectors of list and watch."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

Obj = dict[str, Any]

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class ApiError(Exception):
    """An answer the API server gives as a `Status` object (404 NotFound, 409 AlreadyExists...)."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        out: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


def not_found(resource: str, name: str) -> ApiError:
    details = {"name": name, "kind": resource}
    return ApiError(404, "NotFound", f'{resource} "{name}" not found', details)


def timestamp(at: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if at is None else at))


def new_metadata(body: Obj, namespace: str | None, resource: str) -> Obj:
    """The server-set half of an object's metadata; the name is checked as the API server does."""
    meta = dict(body.get("metadata") or {})
    name = meta.get("name") or ""
    if not name and meta.get("generateName"):
        name = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
    if not isinstance(name, str) or len(name) > 253 or not DNS_LABEL.fullmatch(name):
        raise ApiError(
            422,
            "Invalid",
            f'{resource} "{name}" is invalid: metadata.name: Invalid value: "{name}": a lowercase '
            "RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
        )
    meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=timestamp())
    if namespace is not None:
        meta["namespace"] = namespace
    meta.setdefault("labels", {})
    return meta


_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5}
_DECIMAL = {"k": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_SUFFIXES: dict[str, Decimal] = {
    **{s: Decimal(1024**n) for s, n in _BINARY.items()},
    **{s: Decimal(1000**n) for s, n in _DECIMAL.items()},
    "m": Decimal("0.001"),
}


def quantity(value: Any) -> Decimal:
    """A resource quantity ("500m", "16Gi", 2) as a number, so requests add up and compare."""
    text = str(value).strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix) and text[: -len(suffix)]:
            return Decimal(text[: -len(suffix)]) * _SUFFIXES[suffix]
    try:
        return Decimal(text)
    except ArithmeticError as e:
        raise ApiError(
            422, "Invalid", f"quantities must match the regular expression: {text}"
        ) from e


# --- selectors ---------------------------------------------------------------------------


def _split_top(text: str) -> list[str]:
    """Split a selector on the commas that are not inside `in (a,b)`."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


_SET = re.compile(r"^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$")
Requirement = tuple[str, str, frozenset[str]]  # key, operator (in, notin, exists, !exists), values


def _requirement(term: str) -> Requirement:
    if m := _SET.match(term):
        return m.group(1), m.group(2), frozenset(v.strip() for v in m.group(3).split(","))
    if "!=" in term:
        key, value = term.split("!=", 1)
        return key.strip(), "notin", frozenset([value.strip()])
    if "=" in term:
        key, value = term.replace("==", "=").split("=", 1)
        return key.strip(), "in", frozenset([value.strip()])
    if re.fullmatch(r"!?[A-Za-z0-9./_-]+", term):
        return term.lstrip("!"), "!exists" if term.startswith("!") else "exists", frozenset()
    raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")


def _holds(requirement: Requirement, labels: dict[str, str]) -> bool:
    key, op, values = requirement
    if op in ("exists", "!exists"):
        return (key in labels) == (op == "exists")
    return (labels.get(key) in values) == (op == "in")


def label_matcher(selector: str) -> Callable[[dict[str, str] | None], bool]:
    """A predicate over a labels dict for a `labelSelector` (=, ==, !=, in, notin, key, !key)."""
    requirements = [_requirement(term) for term in _split_top(selector)]
    return lambda labels: all(_holds(r, labels or {}) for r in requirements)


def field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def field_matcher(selector: str) -> Callable[[Obj], bool]:
    """A predicate over an object for a `fieldSelector` (`metadata.name=x,status.phase!=Failed`)."""
    terms: list[tuple[str, bool, str]] = []  # path, equal?, value
    for term in _split_top(selector):
        equal = "!=" not in term
        key, sep, value = term.replace("!=", "=").replace("==", "=").partition("=")
        if not sep:
            raise ApiError(400, "BadRequest", f'invalid field selector: "{term}"')
        terms.append((key.strip(), equal, value.strip()))
    return lambda obj: all((field_value(obj, k) == v) == eq for k, eq, v in terms)
