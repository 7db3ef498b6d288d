"""The little of Kubernetes' protobuf encoding the fake reads: kubectl's typed commands
(`kubectl create namespace`) send built-in objects as protobuf and do not fall back to JSON.
Only the envelope, the kind and the object's metadata (name, generateName, labels, annotations)
are read; a kind whose spec matters is refused with 415."""

from __future__ import annotations

from collections.abc import Iterator

from tests.kube_fake.meta import ApiError, Obj

MAGIC = b"k8s\x00"
READABLE_KINDS = ("Namespace", "ServiceAccount")  # kinds whose metadata is all that matters


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ApiError(400, "BadRequest", "truncated protobuf body")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def _fields(data: bytes) -> Iterator[tuple[int, bytes | int]]:
    """(field number, value) of one message: bytes for length-delimited fields, else ints."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            yield number, value
        elif wire == 2:
            size, at = _varint(data, at)
            yield number, data[at : at + size]
            at += size
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise ApiError(400, "BadRequest", f"unsupported protobuf wire type {wire}")


def _strings(data: bytes) -> dict[int, bytes]:
    return {n: v for n, v in _fields(data) if isinstance(v, bytes)}


def _map_entry(data: bytes) -> tuple[str, str]:
    entry = _strings(data)
    return entry.get(1, b"").decode(), entry.get(2, b"").decode()


def decode(body: bytes) -> Obj:
    if not body.startswith(MAGIC):
        raise ApiError(400, "BadRequest", "a protobuf body starts with k8s\\0")
    envelope = _strings(body[len(MAGIC) :])
    type_meta = _strings(envelope.get(1, b""))
    kind = type_meta.get(2, b"").decode()
    if kind not in READABLE_KINDS:
        raise ApiError(415, "UnsupportedMediaType", f"the fake reads {kind or 'this'} as JSON only")
    metadata: Obj = {"labels": {}, "annotations": {}}
    for number, value in _fields(_strings(envelope.get(2, b"")).get(1, b"")):
        if not isinstance(value, bytes):
            continue
        if number in (1, 2) and value:
            metadata["name" if number == 1 else "generateName"] = value.decode()
        elif number in (11, 12):
            key, text = _map_entry(value)
            metadata["labels" if number == 11 else "annotations"][key] = text
    return {"apiVersion": type_meta.get(1, b"v1").decode(), "kind": kind, "metadata": metadata}
