"""`service:` (SkyServe) and `pool:` (worker pools): their rules and the values in effect.

The shapes are in `stixproto.task.model`; `effective_probe`/`effective_scaling` fill in SkyServe's
defaults (probe GET `/`, 1200 s initial delay, 15 s timeout, 300/1200 s scaling delays).
"""

from __future__ import annotations

from typing import Any

import msgspec

from stixproto.bounds import MAX_COUNT, MAX_QPS, MAX_REPLICAS, MAX_SECONDS
from stixproto.task._fields import check_int, check_positive, choice, describe, fail, join
from stixproto.task.model import ReadinessProbe, ReplicaPolicy, Service

LB_POLICIES = ("least_load", "round_robin", "instance_aware_least_load")
SPOT_PLACERS = ("dynamic_fallback",)
POOL_KEYS = (
    "workers",
    "min_workers",
    "max_workers",
    "queue_length_threshold",
    "upscale_delay_seconds",
    "downscale_delay_seconds",
)
TLS_KEYS = ("keyfile", "certfile")
LOAD_BALANCER_KEYS = ("stream_timeout_seconds",)
AUTH_KEYS = ("api_keys",)
MAX_API_KEYS = 1000
MAX_API_KEY_CHARS = 4096
"""The balancer's own limit on one key."""
MAX_PROBE_PATH = 2048
"""Characters of a readiness probe's path (with its query): what HTTP servers accept on a
request line with room to spare."""
MAX_PROBE_HEADERS = 64
MAX_HEADER_CHARS = 8192
"""Characters of one probe header's value (servers refuse longer header lines)."""
MAX_PROBE_BODY = 65_536
"""Bytes of a probe's `post_data` as JSON: a probe is a short request sent every few seconds."""
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
"""Set by the prober from the body it sends; one written by hand would misframe the request."""
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
"""The characters of an HTTP header name (RFC 9110 `token`)."""
_ACCELERATOR_KEY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:")
DEFAULT_INITIAL_DELAY_SECONDS = 1200
DEFAULT_PROBE_TIMEOUT_SECONDS = 15
DEFAULT_UPSCALE_DELAY_SECONDS = 300
DEFAULT_DOWNSCALE_DELAY_SECONDS = 1200

Number = int | float


class Probe(msgspec.Struct, frozen=True):
    """The readiness probe in effect: GET `/` unless the service says otherwise."""

    path: str = "/"
    initial_delay_seconds: float = DEFAULT_INITIAL_DELAY_SECONDS
    timeout_seconds: float = DEFAULT_PROBE_TIMEOUT_SECONDS
    post_data: dict[str, Any] | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def method(self) -> str:
        return "GET" if self.post_data is None else "POST"


class Scaling(msgspec.Struct, frozen=True):
    """Replica counts and autoscaling knobs in effect (`replicas: N` = fixed at N)."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_qps_per_replica: Number | dict[str, Number] | None = None
    upscale_delay_seconds: float = DEFAULT_UPSCALE_DELAY_SECONDS
    downscale_delay_seconds: float = DEFAULT_DOWNSCALE_DELAY_SECONDS
    num_overprovision: int | None = None
    dynamic_ondemand_fallback: bool = False
    base_ondemand_fallback_replicas: int = 0
    spot_placer: str | None = None
    update_surge: int = 0
    """Replicas a rollout may run past ``max_replicas``: 1 where the user set no maximum
    (`replicas: N`, or a policy without `max_replicas`), so an update never lowers the ready
    count; 0 where ``max_replicas`` was written, which is then a hard limit."""

    @property
    def autoscales(self) -> bool:
        return self.target_qps_per_replica is not None and self.max_replicas > self.min_replicas


def effective_probe(service: Service) -> Probe:
    probe = service.readiness_probe
    if probe is None:
        return Probe()
    if isinstance(probe, str):
        return Probe(path=probe)
    post = probe.post_data
    if isinstance(post, str):
        post = _json_body(post, "service.readiness_probe.post_data")
    delay = probe.initial_delay_seconds
    timeout = probe.timeout_seconds
    return Probe(
        path=probe.path,
        initial_delay_seconds=float(DEFAULT_INITIAL_DELAY_SECONDS if delay is None else delay),
        timeout_seconds=float(DEFAULT_PROBE_TIMEOUT_SECONDS if timeout is None else timeout),
        post_data=post,
        headers=dict(probe.headers or {}),
    )


def effective_scaling(service: Service) -> Scaling:
    policy = service.replica_policy
    if policy is None:
        count = 1 if service.replicas is None else service.replicas
        return Scaling(min_replicas=count, max_replicas=count, update_surge=1)
    up, down = policy.upscale_delay_seconds, policy.downscale_delay_seconds
    return Scaling(
        min_replicas=policy.min_replicas,
        max_replicas=policy.min_replicas if policy.max_replicas is None else policy.max_replicas,
        target_qps_per_replica=policy.target_qps_per_replica,
        upscale_delay_seconds=float(DEFAULT_UPSCALE_DELAY_SECONDS if up is None else up),
        downscale_delay_seconds=float(DEFAULT_DOWNSCALE_DELAY_SECONDS if down is None else down),
        num_overprovision=policy.num_overprovision,
        dynamic_ondemand_fallback=bool(policy.dynamic_ondemand_fallback),
        base_ondemand_fallback_replicas=policy.base_ondemand_fallback_replicas or 0,
        spot_placer=None if policy.spot_placer is None else policy.spot_placer.lower(),
        update_surge=1 if policy.max_replicas is None else 0,
    )


def _json_body(text: str, path: str) -> dict[str, Any]:
    import json

    try:
        body = json.loads(text)
    except ValueError:
        fail(path, "expected a JSON object (as a string) or a map")
    if not isinstance(body, dict):
        fail(path, f"expected a JSON object, got {describe(body)}")
    return body


def _check_probe_path(value: str, where: str) -> None:
    """A URL path (and query) the prober appends to the replica's address as written: a full
    URL, a space, a control or non-ASCII character, or a `.`/`..` segment (which the HTTP
    client folds away, probing another path than the one written) is refused."""
    shown = describe(value)
    if not value.startswith("/"):
        fail(where, f"expected a URL path starting with '/', got {shown}")
    if len(value) > MAX_PROBE_PATH:
        fail(where, f"expected at most {MAX_PROBE_PATH} characters, got {len(value)}")
    if not all("!" <= c <= "~" for c in value):
        fail(
            where,
            "expected a URL path of visible ASCII characters (percent-encode others, a space "
            f"as %20), got {shown}",
        )
    segments = value.split("?", 1)[0].split("#", 1)[0].split("/")
    if "." in segments or ".." in segments:
        fail(where, f"expected a path without '.' or '..' segments, got {shown}")


def _check_probe_headers(headers: dict[str, str], where: str) -> None:
    """Header names are HTTP tokens and values visible ASCII (with spaces and tabs): no CR or
    LF can reach the request, so a header can never add another one."""
    if len(headers) > MAX_PROBE_HEADERS:
        fail(where, f"expected at most {MAX_PROBE_HEADERS} headers, got {len(headers)}")
    for name, value in headers.items():
        if not name or len(name) > 256 or not set(name) <= _TOKEN:
            fail(
                where,
                f"expected header names of letters, digits and !#$%&'*+-.^_`|~, "
                f"got {describe(name)}",
            )
        at = join(where, name)
        if name.lower() in FRAMING_HEADERS:
            fail(at, "the prober sets this header itself from the body it sends")
        if len(value) > MAX_HEADER_CHARS:
            fail(at, f"expected at most {MAX_HEADER_CHARS} characters, got {len(value)}")
        if not all(c == "\t" or " " <= c <= "~" for c in value):
            fail(at, f"expected visible ASCII characters, spaces or tabs, got {describe(value)}")


def _check_post_data(body: dict[str, Any], where: str) -> None:
    import json

    try:
        size = len(json.dumps(body).encode())
    except (ValueError, TypeError, RecursionError):
        fail(where, "expected a JSON object the probe can send")
    if size > MAX_PROBE_BODY:
        fail(where, f"expected at most {MAX_PROBE_BODY} bytes as JSON, got {size}")


def _check_probe(probe: str | ReadinessProbe, path: str) -> None:
    where = path if isinstance(probe, str) else join(path, "path")
    _check_probe_path(probe if isinstance(probe, str) else probe.path, where)
    if isinstance(probe, str):
        return
    for key in ("initial_delay_seconds", "endpoint_probe_interval_seconds"):
        value = getattr(probe, key)
        if value is not None:
            check_positive(float(value), join(path, key), zero_ok=True, limit=MAX_SECONDS)
    for key in ("timeout_seconds", "consecutive_failure_threshold_timeout"):
        value = getattr(probe, key)
        if value is not None:
            check_positive(float(value), join(path, key), limit=MAX_SECONDS)
    post = probe.post_data
    if isinstance(post, str):
        post = _json_body(post, join(path, "post_data"))
    if post is not None:
        _check_post_data(post, join(path, "post_data"))
    if probe.headers:
        _check_probe_headers(probe.headers, join(path, "headers"))


def _check_policy(policy: ReplicaPolicy, path: str) -> None:
    check_int(policy.min_replicas, join(path, "min_replicas"), 0, limit=MAX_REPLICAS)
    for key in ("max_replicas", "num_overprovision", "base_ondemand_fallback_replicas"):
        value = getattr(policy, key)
        if value is not None:
            check_int(value, join(path, key), 0, limit=MAX_REPLICAS)
    if policy.max_replicas is not None and policy.max_replicas < policy.min_replicas:
        fail(
            join(path, "max_replicas"),
            f"expected at least min_replicas ({policy.min_replicas}), got {policy.max_replicas}",
        )
    most = (policy.max_replicas or policy.min_replicas) + (policy.num_overprovision or 0)
    if most > MAX_REPLICAS:
        fail(
            join(path, "num_overprovision"),
            f"max_replicas plus num_overprovision is {most}; a service keeps at most "
            f"{MAX_REPLICAS} replicas",
        )
    qps = policy.target_qps_per_replica
    where = join(path, "target_qps_per_replica")
    if isinstance(qps, dict):
        if len(qps) > MAX_COUNT:
            fail(where, f"expected at most {MAX_COUNT} accelerators, got {len(qps)}")
        for name, value in qps.items():
            if not name or len(name) > 64 or not set(name) <= _ACCELERATOR_KEY:
                fail(
                    where, f"expected accelerator names like 'A100:1' as keys, got {describe(name)}"
                )
            check_positive(float(value), join(where, name), zero_ok=True, limit=MAX_QPS)
    elif qps is not None:
        check_positive(float(qps), where, zero_ok=True, limit=MAX_QPS)
    for key in ("upscale_delay_seconds", "downscale_delay_seconds"):
        value = getattr(policy, key)
        if value is not None:
            check_positive(float(value), join(path, key), zero_ok=True, limit=MAX_SECONDS)
    if policy.spot_placer is not None:
        choice(policy.spot_placer, SPOT_PLACERS, join(path, "spot_placer"), "spot placer")


def _check_open_map(
    raw: dict[str, Any],
    path: str,
    required: tuple[str, ...],
    numbers: tuple[str, ...],
    known: tuple[str, ...],
) -> None:
    for key in raw:
        if key not in known:
            fail(join(path, str(key)), f"unknown key; expected one of: {', '.join(known)}")
    for key in required:
        if key not in raw:
            fail(join(path, key), "required key is missing")
        if not isinstance(raw[key], str) or not raw[key]:
            fail(join(path, key), f"expected a path, got {describe(raw[key])}")
    for key in numbers:
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            fail(join(path, key), f"expected a number, got {describe(value)}")
        if value is not None:
            check_positive(float(value), join(path, key), zero_ok=True, limit=MAX_SECONDS)


def check_service(service: Service, path: str = "service") -> None:
    if service.replicas is not None and service.replica_policy is not None:
        fail(
            join(path, "replicas"),
            "use either replicas (a fixed count) or replica_policy, not both",
        )
    if service.readiness_probe is not None:
        _check_probe(service.readiness_probe, join(path, "readiness_probe"))
    if service.replicas is not None:
        check_int(service.replicas, join(path, "replicas"), 0, limit=MAX_REPLICAS)
    if service.replica_policy is not None:
        _check_policy(service.replica_policy, join(path, "replica_policy"))
    if service.load_balancing_policy is not None:
        choice(
            service.load_balancing_policy,
            LB_POLICIES,
            join(path, "load_balancing_policy"),
            "load balancing policy",
        )
    _check_instance_aware(service, path)
    if service.ports is not None:
        check_int(service.ports, join(path, "ports"), 1, 65535, limit=65535)
    if service.tls is not None:
        _check_open_map(service.tls, join(path, "tls"), TLS_KEYS, (), TLS_KEYS)
    if service.load_balancer is not None:
        _check_open_map(
            service.load_balancer,
            join(path, "load_balancer"),
            (),
            LOAD_BALANCER_KEYS,
            LOAD_BALANCER_KEYS,
        )
    if service.auth is not None:
        _check_auth(service.auth, join(path, "auth"))


def _check_instance_aware(service: Service, path: str) -> None:
    """SkyServe's pairing: per-accelerator targets go with `instance_aware_least_load`, and
    that policy needs them."""
    policy = service.replica_policy
    per_accelerator = policy is not None and isinstance(policy.target_qps_per_replica, dict)
    aware = service.lb_policy.strip() == "instance_aware_least_load"
    if per_accelerator and not aware:
        fail(
            join(path, "load_balancing_policy"),
            "a per-accelerator target_qps_per_replica needs load_balancing_policy "
            "instance_aware_least_load",
        )
    if aware and not per_accelerator:
        fail(
            join(path, "replica_policy.target_qps_per_replica"),
            "instance_aware_least_load needs a map of accelerator to target QPS "
            "(e.g. {A100: 10, T4: 2})",
        )


def _check_auth(auth: dict[str, Any], path: str) -> None:
    for key in auth:
        if key not in AUTH_KEYS:
            fail(join(path, str(key)), f"unknown key; expected one of: {', '.join(AUTH_KEYS)}")
    keys = auth.get("api_keys")
    where = join(path, "api_keys")
    if not isinstance(keys, list) or not keys:
        fail(where, f"expected a non-empty list of keys, got {describe(keys)}")
    if len(keys) > MAX_API_KEYS:
        fail(where, f"expected at most {MAX_API_KEYS} keys, got {len(keys)}")
    for i, key in enumerate(keys):
        if not isinstance(key, str) or not key.strip() or not key.isprintable():
            fail(join(where, str(i)), f"expected a non-empty printable string, got {describe(key)}")
        if len(key) > MAX_API_KEY_CHARS:
            fail(
                join(where, str(i)),
                f"expected at most {MAX_API_KEY_CHARS} characters, got {len(key)}",
            )


def api_keys(service: Service) -> tuple[str, ...]:
    """The keys the balancer accepts (none: no auth)."""
    keys = (service.auth or {}).get("api_keys") or ()
    return tuple(str(k) for k in keys)


def check_pool(pool: dict[str, Any], path: str = "pool") -> None:
    minimums = {"queue_length_threshold": 1}
    for key in POOL_KEYS:
        value = pool.get(key)
        if value is None:
            continue
        if key.endswith("_seconds"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                fail(join(path, key), f"expected a number of seconds, got {describe(value)}")
            check_positive(float(value), join(path, key), zero_ok=True, limit=MAX_SECONDS)
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            fail(join(path, key), f"expected an integer, got {describe(value)}")
        check_int(value, join(path, key), minimums.get(key, 0), limit=MAX_COUNT)
    low, high = pool.get("min_workers"), pool.get("max_workers")
    if isinstance(low, int) and isinstance(high, int) and high < low:
        fail(join(path, "max_workers"), f"expected at least min_workers ({low}), got {high}")
