"""`stixctl storage ls` as whole-process wall time, with 0 and with 50 storage records (each
bucket really on a moto S3 server on loopback, which `storage ls` looks at), as a ratio to the
floor, ``sys.executable -c pass`` of the same venv, sampled in turn in the same run.

SkyPilot's `sky storage ls` took 2.3 s on this machine; with ``--skypilot`` it is measured in the
same run too (SkyPilot 0.14.1 in a venv of its own, installed on first use: bench.skypilot_venv),
against its own API server started (by a first call) before timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import anyio

from bench.common import Home, beside_floor, median, ms, stix_home, vs_floor, wall
from bench.skypilot_venv import skypilot_python
from tests.stores_bed import Emulator, moto_server

RECORDS = 50


async def seed_storages(home: Path, names: list[str]) -> None:
    """READY storage records stix made, as a launch leaves them."""
    import msgspec

    from stixd.actors.storage import StorageData
    from stixd.storage.plan import StorageSpec
    from stixd.store.db import Row, open_store

    async with open_store(home / "state.db") as store:
        for name in names:
            spec = StorageSpec(name=name, store="s3", bucket=name, mode="COPY")
            data = StorageData(created=True, files=1, clusters=[])
            row = Row(
                kind="storage",
                id=name,
                state="READY",
                version=0,
                spec=msgspec.to_builtins(spec),
                data=msgspec.to_builtins(data),
            )
            await store.insert(row, "created")


def make_buckets(emu: Emulator, names: list[str]) -> None:
    import boto3  # type: ignore[import-untyped]

    s3 = boto3.client(
        "s3",
        endpoint_url=emu.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for name in names:
        s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="f.txt", Body=b"x")


@contextmanager
def sky_api(python: str) -> Iterator[tuple[list[str], dict[str, str]]]:
    """`sky storage ls` in a home of its own, its API server up (a first call starts it)."""
    home = Path(tempfile.mkdtemp(prefix="skyhome"))
    env = {**os.environ, "HOME": str(home), "SKYPILOT_DISABLE_USAGE_COLLECTION": "1"}
    sky = str(Path(python).parent / "sky")
    try:
        subprocess.run([sky, "storage", "ls"], env=env, capture_output=True, check=True)
        yield [sky, "storage", "ls"], env
    finally:
        subprocess.run([sky, "api", "stop"], env=env, capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--skypilot", action="store_true", help="also time SkyPilot's `sky storage ls`")
    p.add_argument("--skypilot-python", help="a Python with skypilot 0.14.1 (else installs one)")
    args = p.parse_args()
    names = [f"stix-bench-ls-{i:02d}" for i in range(RECORDS)]
    with ExitStack() as stack:
        emu = stack.enter_context(moto_server())
        make_buckets(emu, names)
        homes: dict[int, Home] = {}
        for count in (0, RECORDS):
            home = stack.enter_context(stix_home())
            home.env.update({k: v for k, v in emu.env.items() if k != "HOME"})
            anyio.run(seed_storages, home.path, names[:count])
            home.ctl("daemon", "start")
            listed = home.ctl("storage", "ls").stdout
            if listed.count("READY") != count or "MISSING" in listed:
                raise SystemExit(f"storage ls with {count} records said:\n{listed}")
            homes[count] = home
        timings: dict[str, Callable[[], float]] = {
            f"stixctl storage ls, {n} storages": partial(
                wall, home.ctl_cmd("storage", "ls"), home.env
            )
            for n, home in homes.items()
        }
        timings[f"stixctl storage ls --json, {RECORDS}"] = partial(
            wall, homes[RECORDS].ctl_cmd("storage", "ls", "--json"), homes[RECORDS].env
        )
        if args.skypilot:
            cmd, env = stack.enter_context(sky_api(skypilot_python(args.skypilot_python)))
            timings["sky storage ls (SkyPilot 0.14.1, 0 storages)"] = partial(wall, cmd, env)
        xs, base = beside_floor(timings, args.runs)
    print(f"floor {sys.executable} -c pass: {ms(base)} (median of {args.runs}, taken in turn)")
    for label, times in xs.items():
        print(f"{label:48s} {vs_floor(median(times), base)}")
    sky = next((median(t) for label, t in xs.items() if label.startswith("sky ")), None)
    if sky is not None:
        ours = median(xs[f"stixctl storage ls, {RECORDS} storages"])
        print(f"sky storage ls / stixctl storage ls ({RECORDS} storages): {sky / ours:.1f}x")


if __name__ == "__main__":
    main()
