"""MOUNT and MOUNT_CACHED on the node: one bucket per ``rclone mount``, flushed and unmounted.

The daemon sends the rclone remote of one bucket (its type and keys, credentials scoped to the
bucket as far as the store allows, and ``valid_s``, how long they last). The agent writes it to a
private config (0600) in a folder of its own (0700) under its node directory, the agent's own
state folder, never the job's working directory (``mounts/<hash of the path>/``: config, cache,
log, and a ``mount.json`` record); the folder, keys and all, goes when the mount is unmounted,
and an agent starting (``clean_stale``) removes the folders of mounts no rclone serves any more
(a crash between writing the config and recording the mount included). It starts
``rclone mount`` in its own session, with rclone's remote control on a loopback port behind a
random password (rclone 1.60 has no Unix-socket ``--rc``).

- MOUNT: ``--vfs-cache-mode writes`` (a file may be opened for reading and writing), and
  ``--read-only`` when the task's ``config.mount.read_only`` asks.
- MOUNT_CACHED: SkyPilot's flags (``--vfs-cache-mode full``, 10 s directory cache and cache
  poll, ``--vfs-fast-fingerprint``) plus the task's ``config.mount_cached`` knobs.
- Either, of an R2 bucket's root: ``--exclude /.stix-labels``, so the job neither sees nor
  deletes the object that holds stix's labels there (R2 has no bucket tags).

A job's final state is written only once every mount's write-back queue is empty
(``flush_all``, called by the runner), so its writes are in the bucket when it counts as done.
Mounts go at ``shutdown`` and autostop (``unmount_all``); an agent starting finds the mounts of
one whose rclone died and unmounts them (``clean_stale``). Asked again for a mount it has, the
agent keeps it (its jobs may be using it) unless its keys end within ``RENEW_S`` (or a quarter of
the new keys' lifetime): then it mounts afresh with the new keys. Keys never reach a log.

Renewable keys (S3's and R2's session keys, which end after ``valid_s``) are not written into
rclone's config: rclone reads them through the AWS SDK's ``credential_process`` (its s3 backend
with ``env_auth``, a profile in a config file of the mount's folder) as ``cat`` of ``keys.json``
(0600) there, the SDK's JSON with an ``Expiration`` at most ``REREAD_S`` ahead, so the SDK reads
the file again that often. The daemon sends fresh keys before the old end (``mount_keys``, or a
launch asking for the same mount again): they replace the file and the running rclone takes them
within ``REREAD_S``, with no remount and nothing a job sees.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .protocol import RequestError

MOUNTS_DIR = "mounts"
RECORD = "mount.json"
CONFIG = "rclone.conf"
KEYS = "keys.json"
AWS_CONFIG = "aws.conf"
REREAD_S = 300.0
"""How long rclone uses renewable keys before it reads ``keys.json`` again (at most)."""
_SESSION_KEYS = ("access_key_id", "secret_access_key", "session_token")
GCS = "google cloud storage"
R2_MARKER = ".stix-labels"
"""The object holding an R2 bucket's labels at its root (``stixd.storage.stores.s3.MARKER``)."""
MAX_TOKEN_LINE = 8192
"""A GCS access token's ``token`` setting (one JSON line) is at most this long."""
_AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)
"""Not passed to an rclone on renewable keys: its SDK takes only the mount's own profile."""
RENEW_S = 3600.0
"""A mount whose keys end sooner than this is made afresh when a launch asks for it again."""
MAX_VALID_S = 30 * 24 * 3600
INSTALL = (
    "install them on the node with `sudo apt-get install -y rclone fuse3` (or your "
    "distribution's packages) and launch again"
)
MODES = ("MOUNT", "MOUNT_CACHED")
CACHED_FLAGS = (
    "--transfers",
    "--checkers",
    "--buffer-size",
    "--vfs-cache-max-size",
    "--vfs-cache-max-age",
    "--vfs-read-ahead",
    "--vfs-read-chunk-size",
    "--vfs-read-chunk-streams",
    "--vfs-write-back",
    "--read-only",
)
"""The ``config.mount_cached`` flags the daemon may pass (``stixd.storage.plan.CACHE_KEYS``);
``--read-only`` is a switch, sent with the value ``true``."""
SWITCHES = ("--read-only",)
NEWER_FLAGS = ("--vfs-read-chunk-streams",)
"""Knobs an older rclone lacks (rclone 1.68 added this one; Debian's rclone is 1.60): left out
there, and said in the mount's answer (``dropped``): a read-speed hint, not what the mount is."""
_KNOB = re.compile(r"[0-9A-Za-z.]{1,32}")
_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
_REMOTE_TYPE = re.compile(r"[a-z][a-z0-9 ]{0,40}")
MOUNT_WAIT_S = 20.0
FLUSH_TIMEOUT_S = 900.0
"""How long a finished job waits for its mounts' writes to reach the bucket, on top of the
longest write-back delay among them (``write_back_s``)."""
UNMOUNT_FLUSH_S = 60.0
"""The same for an unmount (``down``, autostop), on top of the write-back delay."""
WRITE_BACK_MAX_S = 300.0
"""The longest ``--vfs-write-back`` a mount may have: the task reader's bound
(``stixproto.task.storage.WRITE_BACK_MAX_S``, the same number); longer is refused here too."""
RCLONE_WRITE_BACK_S = 5.0
"""rclone's own ``--vfs-write-back`` (MOUNT, which sets none)."""
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|[smhdwMy]?)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_UNIT_S = {"": 1, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_UNIT_S |= {"M": 2592000, "y": 31536000}
POLL_S = 0.1
SETTLE_S = 1.0
"""How long a mount must show no upload before its writes count as flushed: the kernel tells
rclone a file is closed (FUSE release) after the writer's close() has returned, so a job that
has just exited may have a file whose upload is not queued yet."""
_DROP_ENV = ("AWS_CA_BUNDLE", "STIX_NODE_DIR")
"""Debian's rclone 1.60 fails on ``AWS_CA_BUNDLE`` ("unsupported transport"); the node marker
would have a node shutdown kill rclone before its mount is unmounted."""

log = logging.getLogger("stix_agent.mount")
_children: dict[int, subprocess.Popen[bytes]] = {}
"""The rclone processes this agent started, kept to be reaped when their mount goes."""


def missing_tools() -> list[str]:
    """What this node lacks for a FUSE mount: rclone, fusermount, /dev/fuse."""
    missing = []
    if shutil.which("rclone") is None:
        missing.append("rclone")
    if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
        missing.append("fuse3 (fusermount3)")
    if not os.path.exists("/dev/fuse"):
        missing.append("/dev/fuse")
    return missing


def _allow_other() -> bool:
    """``--allow-other`` is allowed for root, or for others when /etc/fuse.conf says so."""
    if os.geteuid() == 0:
        return True
    try:
        with open("/etc/fuse.conf", encoding="utf-8") as f:
            return any(line.split("#", 1)[0].strip() == "user_allow_other" for line in f)
    except OSError:
        return False


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounted(path: str) -> bool:
    """Whether ``path`` is a mount point now (from /proc/self/mounts, which never blocks on a
    dead FUSE endpoint the way a stat does)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            return any(_unescape(line.split(" ")[1]) == path for line in f if " " in line)
    except OSError:
        return os.path.ismount(path)


def _folder(node_dir: Path, dest: str) -> Path:
    return node_dir / MOUNTS_DIR / hashlib.sha256(dest.encode()).hexdigest()[:16]


def _argv_of(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")]
    except OSError:
        return []


def _serves(pid: Any, folder: Path) -> bool:
    """Whether ``pid`` is a live rclone running with ``folder``'s config (not a process that
    took a dead rclone's pid)."""
    return _alive(pid) and str(folder / CONFIG) in _argv_of(int(pid))


def _rclones_of(folder: Path) -> list[int]:
    """The live rclone processes running with ``folder``'s config."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and _serves(int(entry.name), folder):
                found.append(int(entry.name))
    return found


def _records(node_dir: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    root = node_dir / MOUNTS_DIR
    if not root.is_dir():
        return found
    for folder in sorted(root.iterdir()):
        try:
            record = json.loads((folder / RECORD).read_text())
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(record, dict) and isinstance(record.get("dest"), str):
            record["folder"] = str(folder)
            found.append(record)
    return found


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_mount(request: dict[str, Any]) -> dict[str, Any]:
    dest = request.get("dest")
    remote = request.get("remote")
    keys = request.get("keys")
    path = request.get("path")
    mode = request.get("mode")
    flags = request.get("flags", {})
    if not isinstance(dest, str) or not os.path.isabs(dest) or "\0" in dest:
        raise RequestError("bad_request", 'mount needs "dest", an absolute path')
    if not isinstance(remote, str) or not _REMOTE_TYPE.fullmatch(remote):
        raise RequestError("bad_request", 'mount needs "remote", an rclone remote type')
    if not isinstance(keys, dict) or not all(
        isinstance(k, str) and _KEY.fullmatch(k) and isinstance(v, str) and "\n" not in v
        for k, v in keys.items()
    ):
        raise RequestError("bad_request", 'mount needs "keys", rclone settings on one line each')
    if not isinstance(path, str) or not path or "\n" in path or ".." in path.split("/"):
        raise RequestError("bad_request", 'mount needs "path", the bucket and its prefix')
    if mode not in MODES:
        raise RequestError("bad_request", f'"mode" must be one of {", ".join(MODES)}')
    if not isinstance(flags, dict) or not all(
        k in CACHED_FLAGS
        and isinstance(v, str)
        and _KNOB.fullmatch(v)
        and (k not in SWITCHES or v == "true")
        for k, v in flags.items()
    ):
        raise RequestError("bad_request", f'"flags" may set only {", ".join(CACHED_FLAGS)}')
    if write_back_s(flags) > WRITE_BACK_MAX_S:
        raise RequestError(
            "bad_request", f'"--vfs-write-back" may be at most {WRITE_BACK_MAX_S:.0f}s'
        )
    valid_s = request.get("valid_s")
    if valid_s is not None and (
        not isinstance(valid_s, int) or isinstance(valid_s, bool) or not 0 < valid_s <= MAX_VALID_S
    ):
        raise RequestError("bad_request", '"valid_s" must be the keys\' lifetime in seconds')
    return {
        "valid_s": valid_s,
        "dest": os.path.normpath(dest),
        "remote": remote,
        "keys": keys,
        "path": path.strip("/"),
        "mode": mode,
        "flags": flags,
    }


def write_back_s(flags: dict[str, Any]) -> float:
    """A mount's write-back delay in seconds (its ``--vfs-write-back``, an rclone duration;
    rclone's own default without one); a value that is not a duration counts as infinite."""
    value = flags.get("--vfs-write-back")
    if value is None:
        return RCLONE_WRITE_BACK_S
    if not isinstance(value, str) or not _DURATION.fullmatch(value):
        return float("inf")
    return sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(value))


def _private(path: Path, text: str) -> None:
    """Write ``path`` (0600) whole at once: a reader sees the old content or the new."""
    part = path.with_name(path.name + ".part")
    fd = os.open(str(part), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(str(part), 0o600)
    os.replace(part, path)


def renewable(spec: dict[str, Any]) -> bool:
    """Keys that end and can be replaced under a running rclone: an S3 API's session keys, or
    a GCS access token (rclone reads its config again for a newer one when it ends)."""
    keys = spec["keys"]
    if spec["valid_s"] is None:
        return False
    if spec["remote"] == GCS:
        return "token" in keys
    return spec["remote"] == "s3" and "access_key_id" in keys and "secret_access_key" in keys


def _stamped(token: str, valid_s: int) -> str:
    """A GCS ``token`` setting whose ``expiry`` this node's clock says (``valid_s`` from
    now), as one JSON line; a token that is not one refused."""
    try:
        doc = json.loads(token)
    except (ValueError, RecursionError):
        doc = None
    if not (isinstance(doc, dict) and isinstance(doc.get("access_token"), str)):
        raise RequestError("bad_request", '"token" must be an rclone access token (JSON)')
    expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + valid_s))
    kept = {"access_token": doc["access_token"], "token_type": "Bearer", "expiry": expiry}
    return json.dumps(kept, separators=(",", ":"))


def _write_token(folder: Path, token: str, valid_s: int) -> float:
    """A renewed GCS token into the mount's rclone config, in place of the old one (rclone
    writes the file too, the same token back): when it ends."""
    config = folder / CONFIG
    lines = config.read_text().splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith("token = ")]
    if len(at) != 1:
        raise RequestError("not_renewable", "the mount's rclone config holds no access token")
    lines[at[0]] = f"token = {_stamped(token, valid_s)}"
    _private(config, "\n".join(lines) + "\n")
    return time.time() + valid_s


def _write_keys(folder: Path, keys: dict[str, str], valid_s: int) -> float:
    """The session keys as ``credential_process`` answers them; when they end."""
    expires_at = time.time() + valid_s
    reread = min(expires_at - min(300.0, valid_s / 10), time.time() + REREAD_S)
    answer = {
        "Version": 1,
        "AccessKeyId": keys["access_key_id"],
        "SecretAccessKey": keys["secret_access_key"],
        "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reread)),
    }
    if keys.get("session_token"):
        answer["SessionToken"] = keys["session_token"]
    _private(folder / KEYS, json.dumps(answer))
    return expires_at


def _write_config(folder: Path, spec: dict[str, Any]) -> Path:
    config = folder / CONFIG
    keys = dict(spec["keys"])
    if renewable(spec) and spec["remote"] == GCS:
        keys["token"] = _stamped(keys["token"], spec["valid_s"])
    elif renewable(spec):  # read through the SDK's credential_process: replaceable
        keys = {k: v for k, v in keys.items() if k not in _SESSION_KEYS}
        aws = folder / AWS_CONFIG
        keys |= {"env_auth": "true", "profile": "stix", "shared_credentials_file": str(aws)}
        process = f"cat {shlex.quote(str(folder / KEYS))}"
        _private(aws, f"[profile stix]\ncredential_process = {process}\n")
    lines = ["[stix]", f"type = {spec['remote']}", *(f"{k} = {v}" for k, v in sorted(keys.items()))]
    _private(config, "\n".join(lines) + "\n")
    return config


def _r2_root(spec: dict[str, Any]) -> bool:
    """Whether the mount is an R2 bucket's root, where its labels object lies."""
    r2 = spec["remote"] == "s3" and spec["keys"].get("provider") == "Cloudflare"
    return r2 and "/" not in spec["path"]


def _argv(spec: dict[str, Any], folder: Path, config: Path, port: int) -> list[str]:
    argv = [
        "rclone",
        "mount",
        f"stix:{spec['path']}",
        spec["dest"],
        "--config",
        str(config),
        "--log-file",
        str(folder / "rclone.log"),
        "--log-level",
        "INFO",
        "--cache-dir",
        str(folder / "cache"),
        "--rc",
        "--rc-addr",
        f"127.0.0.1:{port}",
    ]
    if _allow_other():
        argv.append("--allow-other")
    if _r2_root(spec):  # stix's labels: not the job's to see, delete or overwrite
        argv += ["--exclude", f"/{R2_MARKER}"]
    if spec["mode"] == "MOUNT":  # and SkyPilot's config.mount.read_only
        argv += ["--vfs-cache-mode", "writes"]
        argv += [flag for flag in SWITCHES if spec["flags"].get(flag) == "true"]
    else:  # SkyPilot's MOUNT_CACHED (sky/data/mounting_utils.py), then the task's knobs
        argv += [
            "--vfs-cache-mode",
            "full",
            "--dir-cache-time",
            "10s",
            "--vfs-cache-poll-interval",
            "10s",
            "--vfs-fast-fingerprint",
        ]
        for flag, value in sorted(spec["flags"].items()):
            argv += [flag] if flag in SWITCHES else [flag, value]
    return argv


def rclone_knows(flag: str) -> bool:
    """Whether this node's rclone takes ``flag`` (its ``mount --help``, asked once)."""
    return f"{flag} " in _mount_help()


@functools.cache
def _mount_help() -> str:
    try:
        return subprocess.run(
            ["rclone", "mount", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            env=_environment("", "", False),
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _environment(user: str, password: str, session_keys: bool) -> dict[str, str]:
    drop = _DROP_ENV + _AWS_ENV if session_keys else _DROP_ENV
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["RCLONE_RC_USER"] = user
    env["RCLONE_RC_PASS"] = password
    return env


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "ERROR" in ln or "CRITICAL" in ln or "Fatal" in ln]
    return (errors or lines or ["no log"])[-1][-300:]


def _digest(spec: dict[str, Any]) -> str:
    """What makes a mount the same one again: not its keys, which a store makes afresh for
    each launch (an Azure SAS, STS credentials): a relaunch keeps the mount its running jobs
    use (while its keys last: ``_lasts``)."""
    same = {k: v for k, v in spec.items() if k not in ("keys", "valid_s")}
    return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()


def _lasts(record: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether a mount's keys last long enough to keep it for another launch."""
    expires = record.get("expires_at")
    if not isinstance(expires, (int, float)):
        return True  # keys with no end (a store's own, an emulator's anonymous access)
    margin = RENEW_S if spec["valid_s"] is None else min(RENEW_S, spec["valid_s"] / 4)
    return expires - time.time() > margin


def mount(node_dir: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Mount one bucket (blocking: run it off the event loop). Idempotent for the same spec."""
    spec = parse_mount(request)
    missing = missing_tools()
    if missing:
        raise RequestError(
            "missing_tools",
            f"this node has no {' and no '.join(missing)} for a bucket mount; {INSTALL}",
        )
    dest = spec["dest"]
    folder = _folder(node_dir, dest)
    digest = _digest(spec)
    for record in _records(node_dir):
        if record["dest"] != dest:
            continue
        serving = _serves(record.get("pid"), Path(record["folder"])) and mounted(dest)
        same = record.get("digest") == digest and serving
        if same and record.get("renewable") and renewable(spec):
            _renew(record, spec["keys"], spec["valid_s"])  # the running rclone takes them
            return {"dest": dest, "mounted": False}
        if same and _lasts(record, spec):
            return {"dest": dest, "mounted": False}
        _unmount(record)
    if mounted(dest):
        raise RequestError("busy", f"{dest} is already a mount point that stix did not make")
    os.makedirs(dest, exist_ok=True)
    if os.listdir(dest):
        raise RequestError("not_empty", f"cannot mount a bucket on {dest}: it is not empty")
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(str(folder.parent), 0o700)
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(str(folder), 0o700)
    dropped = [f for f in NEWER_FLAGS if f in spec["flags"] and not rclone_knows(f)]
    if dropped:
        kept = {k: v for k, v in spec["flags"].items() if k not in dropped}
        spec = {**spec, "flags": kept}
        log.info("rclone_flags_dropped dest=%s flags=%s", dest, ",".join(dropped))
    expires_at = time.time() + spec["valid_s"] if spec["valid_s"] else None
    if renewable(spec) and spec["remote"] != GCS:
        expires_at = _write_keys(folder, spec["keys"], spec["valid_s"])
    config = _write_config(folder, spec)
    user, password = "stix", secrets.token_urlsafe(24)
    port = _free_port()
    log_file = folder / "rclone.log"
    with open(os.devnull, "rb") as null_in, open(log_file, "ab") as out:
        proc = subprocess.Popen(
            _argv(spec, folder, config, port),
            stdin=null_in,
            stdout=out,
            stderr=out,
            env=_environment(user, password, renewable(spec)),
            start_new_session=True,
        )
    _children[proc.pid] = proc
    record = {
        "dest": dest,
        "mode": spec["mode"],
        "bucket": spec["path"],
        "pid": proc.pid,
        "port": port,
        "user": user,
        "password": password,
        "digest": digest,
        "expires_at": expires_at,
        "renewable": renewable(spec),
        "write_back_s": write_back_s(spec["flags"]),
    }
    _private(folder / RECORD, json.dumps(record))
    deadline = time.monotonic() + MOUNT_WAIT_S
    while not mounted(dest):
        if proc.poll() is not None or not _alive(proc.pid) or time.monotonic() > deadline:
            record["folder"] = str(folder)
            _unmount(record)
            raise RequestError(
                "mount_failed",
                f"rclone could not mount {spec['path']} on {dest}: {_tail(log_file)}",
            )
        time.sleep(POLL_S)
    log.info("bucket_mounted dest=%s mode=%s pid=%d", dest, spec["mode"], proc.pid)
    return {"dest": dest, "mounted": True} | ({"dropped": dropped} if dropped else {})


def _renew(record: dict[str, Any], keys: dict[str, str], valid_s: int) -> float:
    folder = Path(record["folder"])
    if "token" in keys:
        expires_at = _write_token(folder, keys["token"], valid_s)
    else:
        expires_at = _write_keys(folder, keys, valid_s)
    kept = {k: v for k, v in record.items() if k != "folder"}
    _private(folder / RECORD, json.dumps(kept | {"expires_at": expires_at}))
    log.info("bucket_keys_renewed dest=%s valid_s=%d", record["dest"], valid_s)
    return expires_at


def parse_mount_keys(request: dict[str, Any]) -> dict[str, Any]:
    dest = request.get("dest")
    keys = request.get("keys")
    valid_s = request.get("valid_s")
    if not isinstance(dest, str) or not os.path.isabs(dest) or "\0" in dest:
        raise RequestError("bad_request", 'mount_keys needs "dest", an absolute path')
    if isinstance(keys, dict) and set(keys) == {"token"}:  # a GCS access token
        token = keys["token"]
        if not (isinstance(token, str) and len(token) <= MAX_TOKEN_LINE and "\n" not in token):
            raise RequestError("bad_request", '"token" must be one line')
    elif not isinstance(keys, dict) or not all(
        k in _SESSION_KEYS and isinstance(v, str) and v and len(v) <= 4096 and "\n" not in v
        for k, v in keys.items()
    ):
        raise RequestError(
            "bad_request",
            f'"keys" may hold only {", ".join(_SESSION_KEYS)} or a token, each one line',
        )
    elif "access_key_id" not in keys or "secret_access_key" not in keys:
        raise RequestError("bad_request", "mount_keys needs an access key id and its secret")
    if not isinstance(valid_s, int) or isinstance(valid_s, bool) or not 0 < valid_s <= MAX_VALID_S:
        raise RequestError("bad_request", '"valid_s" must be the keys\' lifetime in seconds')
    return {"dest": os.path.normpath(dest), "keys": keys, "valid_s": valid_s}


def mount_keys(node_dir: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Hand a running mount fresh keys (blocking, brief): its rclone reads them within
    ``REREAD_S``; the mount, its cache and the jobs using it stay as they are."""
    spec = parse_mount_keys(request)
    dest = spec["dest"]
    for record in _records(node_dir):
        if record["dest"] != dest:
            continue
        if not (_serves(record.get("pid"), Path(record["folder"])) and mounted(dest)):
            break
        if not record.get("renewable"):
            raise RequestError("not_renewable", f"the mount at {dest} has keys that do not end")
        expires_at = _renew(record, spec["keys"], spec["valid_s"])
        return {"dest": dest, "renewed": True, "expires_at": expires_at}
    raise RequestError("not_mounted", f"no bucket is mounted at {dest}")


def _rc(record: dict[str, Any], method: str) -> dict[str, Any]:
    token = base64.b64encode(f"{record['user']}:{record['password']}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{int(record['port'])}/{method}",
        data=b"{}",
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as answer:
        body = json.loads(answer.read())
    return body if isinstance(body, dict) else {}


def pending_uploads(record: dict[str, Any]) -> int:
    """Uploads in progress or queued in the mount's write-back cache (rclone ``vfs/stats``)."""
    cache = _rc(record, "vfs/stats").get("diskCache") or {}
    return int(cache.get("uploadsInProgress", 0)) + int(cache.get("uploadsQueued", 0))


def flush_all(
    node_dir: Path, timeout: float = FLUSH_TIMEOUT_S, dests: list[str] | None = None
) -> str | None:
    """Wait until every mount on the node (only those at ``dests``, a job's own, when given)
    has written its files to the bucket; a one-line problem when one cannot be flushed within
    ``timeout`` plus the longest write-back delay among them (None when all are). Another job
    writing steadily to a shared mount never holds a job that declared no such mount."""
    wanted = None if dests is None else {os.path.normpath(d) for d in dests}
    records = [
        r for r in _records(node_dir) if wanted is None or os.path.normpath(r["dest"]) in wanted
    ]
    timeout += max((_delay(r) for r in records), default=0.0)
    deadline = time.monotonic() + timeout
    for record in records:
        where = f"{record.get('bucket')} at {record['dest']}"
        quiet_since: float | None = None
        while True:
            if not _serves(record.get("pid"), Path(record["folder"])):
                return f"the mount of {where} ended before its writes were flushed"
            try:
                left = pending_uploads(record)
            except (OSError, ValueError, urllib.error.URLError):
                left = -1  # its remote control is not up yet or is busy: ask again
            now = time.monotonic()
            if left != 0:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= SETTLE_S:
                break
            if now > deadline:
                return (
                    f"writes to {where} were not flushed to the bucket within {timeout:.0f}s "
                    f"({left if left >= 0 else 'unknown'} upload(s) pending); see "
                    f"{record['folder']}/rclone.log"
                )
            time.sleep(POLL_S)
    return None


def _delay(record: dict[str, Any]) -> float:
    """A recorded mount's write-back delay (the longest allowed for a record without one)."""
    delay = record.get("write_back_s")
    if isinstance(delay, int | float) and not isinstance(delay, bool) and delay >= 0:
        return min(float(delay), WRITE_BACK_MAX_S)
    return WRITE_BACK_MAX_S


def _fusermount() -> str:
    return shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount"


def _unmount(record: dict[str, Any]) -> None:
    """Unmount one mount (lazily if busy), wait for its rclone to exit, drop its folder (its
    config and keys first)."""
    dest = record["dest"]
    folder = Path(record["folder"])
    pid = record.get("pid")
    ours = _serves(pid, folder)  # a dead rclone's pid may be another process's by now
    if mounted(dest):
        tool = _fusermount()
        done = subprocess.run([tool, "-u", dest], capture_output=True, check=False)
        if done.returncode != 0 and mounted(dest):
            subprocess.run([tool, "-uz", dest], capture_output=True, check=False)
    deadline = time.monotonic() + 10.0
    while ours and _alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if ours and isinstance(pid, int) and _serves(pid, folder):
        os.kill(pid, 9)
    child = _children.pop(pid, None) if isinstance(pid, int) else None
    if child is not None:  # ours: reaped, not left a zombie
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
    for secret in (KEYS, CONFIG):
        with contextlib.suppress(OSError):
            (folder / secret).unlink()
    shutil.rmtree(folder, ignore_errors=True)
    log.info("bucket_unmounted dest=%s", dest)


def unmount_all(node_dir: Path) -> int:
    """Flush (bounded) and unmount every mount of this node; how many there were."""
    records = _records(node_dir)
    if records:
        problem = flush_all(node_dir, UNMOUNT_FLUSH_S)
        if problem:
            log.warning("unmount_unflushed %s", problem)
    for record in records:
        try:
            _unmount(record)
        except OSError:
            log.exception("unmount_failed dest=%s", record["dest"])
    return len(records)


def _orphans(node_dir: Path) -> list[dict[str, Any]]:
    """Mount folders with no record (an agent stopped between writing a config and recording
    its mount), as records of whatever rclone still runs with their config."""
    root = node_dir / MOUNTS_DIR
    if not root.is_dir():
        return []
    recorded = {Path(r["folder"]) for r in _records(node_dir)}
    found: list[dict[str, Any]] = []
    for folder in sorted(p for p in root.iterdir() if p not in recorded):
        pids = _rclones_of(folder) if folder.is_dir() else []
        argv = _argv_of(pids[0]) if pids else []
        dest = argv[3] if len(argv) > 3 and argv[1:2] == ["mount"] else ""
        found.append({"dest": dest, "folder": str(folder), "pid": pids[0] if pids else None})
    return found


def clean_stale(node_dir: Path) -> int:
    """At agent start: unmount what a previous agent mounted whose rclone is gone (a dead
    endpoint) and remove its folder, keys and all, and the folders no mount was recorded
    for; mounts still served stay for the jobs that use them."""
    stale = [
        r for r in _records(node_dir) if not _serves(r.get("pid"), Path(r["folder"]))
    ] + _orphans(node_dir)
    for record in stale:
        try:
            if record["dest"]:
                _unmount(record)
            else:
                shutil.rmtree(record["folder"], ignore_errors=True)
                with contextlib.suppress(OSError):
                    os.unlink(record["folder"])  # a stray file, not a folder
        except OSError:
            log.exception("stale_unmount_failed dest=%s", record["dest"])
    return len(stale)
