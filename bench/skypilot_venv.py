"""SkyPilot in a venv of its own, installed by the benchmarks that compare stix against it.

`skypilot_python()` answers which Python runs SkyPilot, in this order: the `--skypilot-python`
flag, `$STIX_SKYPILOT_PYTHON`, else a venv under `$STIX_BENCH_CACHE` (default
`~/.cache/stix-bench`) named after the pinned version, installed on first use and reused after.
A marker file is written only once pip has finished and the venv imports `sky` at the pinned
version, so an install cut short (Ctrl-C, a lost connection) is done again from scratch.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

VERSION = "0.14.1"
# The base install already carries uvicorn and fastapi, which sky.serve.load_balancer runs on,
# and what the optimizer needs to plan over the local catalogs: no extras.
REQUIREMENT = f"skypilot=={VERSION}"
OVERRIDE_ENV = "STIX_SKYPILOT_PYTHON"
CACHE_ENV = "STIX_BENCH_CACHE"
MARKER = ".stix-bench-installed"

# Importing sky writes under ~/.sky: the probe gets a HOME of its own and sends no usage data.
_PROBE = "import sky; print(sky.__version__)"


def default_venv(environ: Mapping[str, str] = os.environ) -> Path:
    cache = environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "stix-bench")
    return Path(cache) / f"skypilot-{VERSION}"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def log_path(venv: Path) -> Path:
    """Beside the venv, not in it: `venv --clear` would wipe it."""
    return venv.with_name(venv.name + ".pip.log")


def sky_version(python: str | Path) -> str | None:
    """The `sky.__version__` that ``python`` imports, or None when it cannot import sky."""
    with tempfile.TemporaryDirectory(prefix="skyprobe") as home:
        env = {**os.environ, "HOME": home, "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
        try:
            out = subprocess.run(
                [str(python), "-c", _PROBE],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
    lines = out.stdout.strip().splitlines()
    return lines[-1].strip() if out.returncode == 0 and lines else None


def is_installed(venv: Path) -> bool:
    marker = venv / MARKER
    return (
        marker.is_file()
        and marker.read_text().strip() == REQUIREMENT
        and sky_version(venv_python(venv)) == VERSION
    )


@contextmanager
def _locked(venv: Path) -> Iterator[None]:
    """One installer at a time per venv, across processes (two benchmarks started together)."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with venv.with_name(venv.name + ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process installing SkyPilot into {venv}", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def install(venv: Path) -> None:
    """A fresh venv at ``venv`` with SkyPilot in it; SystemExit naming pip's log on failure."""
    (venv / MARKER).unlink(missing_ok=True)  # first: a cut-short install must not look done
    log = log_path(venv)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv_python(venv)), "-m", "pip", "install", REQUIREMENT],
    ]
    print(f"installing {REQUIREMENT} into {venv} (once, takes minutes) ...", end=" ", flush=True)
    started = time.monotonic()
    with log.open("w") as out:
        for argv in steps:
            out.write("$ " + " ".join(argv) + "\n")
            out.flush()
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False).returncode:
                print("failed", flush=True)
                raise SystemExit(f"installing {REQUIREMENT} failed; pip's log: {log}")
    got = sky_version(venv_python(venv))
    if got != VERSION:
        print("failed", flush=True)
        raise SystemExit(f"{venv} imports sky {got} after installing {REQUIREMENT}; log: {log}")
    (venv / MARKER).write_text(REQUIREMENT + "\n")
    print(f"done in {time.monotonic() - started:.0f} s", flush=True)


def ensure_venv(venv: Path) -> Path:
    """The Python of the venv at ``venv``, installing SkyPilot into it unless already done."""
    with _locked(venv):
        if not is_installed(venv):
            install(venv)
    return venv_python(venv)


def skypilot_python(flag: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The Python to run SkyPilot with: ``flag`` (`--skypilot-python`), else
    `$STIX_SKYPILOT_PYTHON`, else the cached venv (installed first if need be)."""
    given = flag or environ.get(OVERRIDE_ENV)
    if not given:
        return str(ensure_venv(default_venv(environ)))
    version = sky_version(given)
    if version is None:
        raise SystemExit(
            f"{given} cannot import sky; unset --skypilot-python and ${OVERRIDE_ENV} "
            f"to let the benchmark install {REQUIREMENT} itself"
        )
    if version != VERSION:
        print(f"note: {given} has SkyPilot {version}; the figures are meant for {VERSION}")
    return given
