"""Where a service's balancer keeps its files, and the spec it was started with.

`<home>/serve/<service>/` (mode 0700) holds `spec.json` (0600: it may hold API keys), `port`
(the port chosen once for `port: 0`), `balancer.pid`, `balancer.log` and the control socket
(there, or under /tmp when the path is too long for a Unix socket).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

from stixd.serve.seams import BalancerSpec

POLICIES = ("least_load", "round_robin", "instance_aware_least_load")
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
MAX_SPEC_BYTES = 1024 * 1024
MAX_QUEUE = 1_000_000


class BadSpec(ValueError):
    """A spec the balancer cannot run with; the message is one line naming the field."""


@dataclass(frozen=True)
class Layout:
    dir: Path

    @property
    def spec(self) -> Path:
        return self.dir / "spec.json"

    @property
    def port(self) -> Path:
        return self.dir / "port"

    @property
    def pid(self) -> Path:
        return self.dir / "balancer.pid"

    @property
    def log(self) -> Path:
        return self.dir / "balancer.log"

    @property
    def control(self) -> Path:
        path = self.dir / "control.sock"
        if len(str(path)) <= MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:24]
        return Path("/tmp") / f"stix-{os.getuid()}" / f"lb-{digest}.sock"


def check(spec: BalancerSpec) -> BalancerSpec:
    """``spec`` if a balancer can run with it; else `BadSpec`."""
    if not 0 <= spec.port <= 65535:
        raise BadSpec(f"port {spec.port} is not 0 .. 65535")
    if spec.policy not in POLICIES:
        raise BadSpec(f"load_balancing_policy {spec.policy!r} is not one of {', '.join(POLICIES)}")
    timeout = spec.stream_timeout_seconds
    if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= 86400):
        raise BadSpec("stream_timeout_seconds is a number of seconds in (0, 86400]")
    if not 0 <= spec.queue_limit <= MAX_QUEUE:
        raise BadSpec(f"queue_limit is 0 .. {MAX_QUEUE}")
    if (spec.tls_keyfile is None) != (spec.tls_certfile is None):
        raise BadSpec("tls needs both keyfile and certfile")
    if any(not key or len(key) > 4096 for key in spec.api_keys):
        raise BadSpec("an API key is empty or longer than 4096 characters")
    return spec


def encode_spec(spec: BalancerSpec) -> bytes:
    return msgspec.json.encode(spec)


def decode_spec(data: bytes) -> BalancerSpec:
    if len(data) > MAX_SPEC_BYTES:
        raise BadSpec(f"spec file over {MAX_SPEC_BYTES} bytes")
    try:
        spec = msgspec.json.decode(data, type=BalancerSpec)
    except msgspec.DecodeError as exc:
        raise BadSpec(f"spec file does not decode: {str(exc)[:200]}") from None
    return check(spec)


def digest(spec: BalancerSpec) -> str:
    """Names the spec a balancer runs with: a different digest means a restart."""
    return hashlib.sha256(encode_spec(spec)).hexdigest()


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by this user only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
