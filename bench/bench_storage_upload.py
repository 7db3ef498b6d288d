"""Uploading a workdir to a bucket: stix's ``upload_tree`` against ``aws s3 sync`` and rsync.

A tree of ``--files`` files and ``--mib`` MiB in all (default 10,000 files, 1 GiB: ten large
files hold 80 % of the bytes, the rest is small files, as a code-and-data workdir) is made in a
temporary directory, then sent to a moto S3 server on loopback (tests/stores_bed.py) by:

- stix: ``Bucket.upload_tree`` (size + ETag compare against one listing, 10 files in flight,
  8 MiB multipart parts), cold into an empty bucket and again with nothing changed;
- the baseline: ``aws s3 sync`` (the AWS CLI, when installed; else boto3's transfer manager
  with 8 threads, the CLI's own engine) into another bucket of the same server, cold and again;
- plain ``rsync -a`` into a local directory, cold and again (the floor of copying the bytes).

Printed as ratios to the baselines of the same run; nothing asserts on time. moto is a Python
server and is the bottleneck for both S3 uploaders alike. ``--small`` (``--files 1000 --mib
64``) is a quick run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]

from stixd.storage.stores import LABEL_STORAGE, StoreKind, open_stores
from tests import stores_bed

LARGE = 10
LARGE_SHARE = 0.8


def make_tree(root: Path, files: int, total: int) -> None:
    """``files`` files, ``total`` bytes: ``LARGE`` big ones and many small ones in 100 dirs."""
    rng = random.Random(19)
    large = min(LARGE, files // 2)
    big_each = int(total * LARGE_SHARE) // max(1, large)
    small_n = files - large
    small_each = (total - big_each * large) // max(1, small_n)
    block = os.urandom(1 << 20)
    for i in range(large):
        with (root / f"data-{i}.bin").open("wb") as f:
            left = big_each
            while left:
                n = min(left, len(block))
                f.write(block[:n])
                left -= n
            f.write(i.to_bytes(4, "big"))  # no two alike
    for i in range(small_n):
        d = root / "src" / f"d{i % 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        size = max(1, int(small_each * rng.uniform(0.5, 1.5)))
        start = rng.randrange(0, len(block) - size) if size < len(block) else 0
        (d / f"f{i}.py").write_bytes(block[start : start + size] + i.to_bytes(4, "big"))


def children_cpu() -> float:
    """CPU seconds of the finished child processes (the AWS CLI's)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


async def stix_upload(
    emu: stores_bed.Emulator, root: Path, bucket_name: str
) -> tuple[float, float, float, str]:
    stores = open_stores(emu.config, emu.env, "bench000")
    try:
        bucket = stores.bucket(StoreKind.S3, bucket_name)
        await bucket.create({LABEL_STORAGE: "bench"})
        t0, c0 = time.perf_counter(), time.process_time()
        cold = await bucket.upload_tree(root)
        t1, cpu = time.perf_counter(), time.process_time() - c0
        warm = await bucket.upload_tree(root)
        t2 = time.perf_counter()
        note = (
            f"stix: cold sent {cold.sent} files / {cold.bytes_sent >> 20} MiB; "
            f"again sent {warm.sent}"
        )
        return t1 - t0, t2 - t1, cpu, note
    finally:
        await stores.aclose()


def aws_cli_sync(emu: stores_bed.Emulator, root: Path, bucket: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"} | emu.env
    subprocess.run(
        ["aws", "s3", "sync", str(root), f"s3://{bucket}", "--only-show-errors",
         "--endpoint-url", emu.url],
        env=env, check=True,
    )  # fmt: skip


def boto3_parallel(emu: stores_bed.Emulator, root: Path, bucket: str) -> None:
    """Without the CLI: every file through boto3's transfer manager, 8 at a time (what the CLI
    does, minus its listing compare, so a second run sends everything again)."""
    s3 = client(emu)
    conf = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
    paths = [p for p in root.rglob("*") if p.is_file()]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda p: s3.upload_file(
                    str(p), bucket, p.relative_to(root).as_posix(), Config=conf
                ),
                paths,
            )
        )


def client(emu: stores_bed.Emulator) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=emu.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def run(emu: stores_bed.Emulator, work: Path, files: int, mib: int) -> None:
    """Make the tree, send it the three ways, print the table and the ratios."""
    root = work / "tree"
    root.mkdir()
    t = timed(lambda: make_tree(root, files, mib << 20))
    print(f"tree: {files} files, {mib} MiB, made in {t:.1f} s")

    stix_cold, stix_warm, stix_cpu, note = asyncio.run(stix_upload(emu, root, "bench-stix"))
    print(note)

    base_name = "aws s3 sync" if shutil.which("aws") else "boto3 transfer manager, 8 threads"
    s3 = client(emu)
    s3.create_bucket(Bucket="bench-base")
    upload = aws_cli_sync if shutil.which("aws") else boto3_parallel
    c0 = children_cpu() if upload is aws_cli_sync else time.process_time()
    base_cold = timed(lambda: upload(emu, root, "bench-base"))
    base_cpu = (children_cpu() if upload is aws_cli_sync else time.process_time()) - c0
    base_warm = timed(lambda: upload(emu, root, "bench-base"))

    dest = work / "rsync-dest"
    rsync = ["rsync", "-a", f"{root}/", f"{dest}/"]
    rsync_cold = timed(lambda: subprocess.run(rsync, check=True))
    rsync_warm = timed(lambda: subprocess.run(rsync, check=True))

    print(f"\n{'':34}{'cold':>10}{'unchanged':>12}")
    print(f"{'stix upload_tree (s)':34}{stix_cold:10.2f}{stix_warm:12.2f}")
    print(f"{base_name + ' (s)':34}{base_cold:10.2f}{base_warm:12.2f}")
    print(f"{'rsync -a to a local dir (s)':34}{rsync_cold:10.2f}{rsync_warm:12.2f}")
    print(f"\nstix / {base_name}: cold {stix_cold / base_cold:.2f}x, "
          f"unchanged {stix_warm / base_warm:.2f}x")  # fmt: skip
    print(f"client CPU, cold: stix {stix_cpu:.2f} s, {base_name} {base_cpu:.2f} s "
          f"({stix_cpu / base_cpu:.2f}x; moto's own CPU is in neither)")  # fmt: skip
    print(f"stix / rsync -a: cold {stix_cold / rsync_cold:.2f}x, "
          f"unchanged {stix_warm / rsync_warm:.2f}x")  # fmt: skip
    sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--small", action="store_true", help="a quick run: --files 1000 --mib 64")
    args = p.parse_args()
    if args.small:
        args.files, args.mib = 1000, 64
    if not 2 <= args.files <= 1_000_000 or not 1 <= args.mib <= 64 * 1024:
        p.error("--files in 2..1000000, --mib in 1..65536")
    work = Path(tempfile.mkdtemp(prefix="stix-bench-upload-"))
    with stores_bed.moto_server() as emu:
        try:
            run(emu, work, args.files, args.mib)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
