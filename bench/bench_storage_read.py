"""Reading a bucket from a job on the local infra, against a moto S3 server on loopback.

1. Sequential read MB/s of one object (256 MiB, ``--mib``) inside the job: through a COPY mount
   (the agent downloaded it before the job started) and through MOUNT_CACHED (rclone on the
   node), each as a ratio to a local file of the same size the job wrote itself, read the same
   way in the same job. A mode this build refuses at launch is skipped, saying why.
2. Time from `stixctl launch` to the job's first byte read from the mounted bucket (COPY:
   after the whole download; MOUNT_CACHED: on demand), as a ratio to the launch of the same task
   without the mount (time to its first command), each on a fresh cluster.

Every figure is a ratio to a baseline taken in the same run; nothing asserts on time.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

from bench.common import Home, median, stix_home
from tests.stores_bed import Emulator, moto_server

BUCKET = "stix-bench-read"
KEY = "big.bin"
READ = (
    "python3 -c 'import sys,time\n"
    "for p in sys.argv[1:]:\n"
    "    t=time.perf_counter(); n=0\n"
    '    with open(p,"rb",buffering=0) as f:\n'
    "        while b:=f.read(4<<20): n+=len(b)\n"
    '    print("READ",p,n,time.perf_counter()-t)\' '
)


def put_object(emu: Emulator, mib: int) -> None:
    import boto3  # type: ignore[import-untyped]
    from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]

    s3 = boto3.client(
        "s3",
        endpoint_url=emu.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=BUCKET)
    path = Path(emu.dir) / KEY
    with path.open("wb") as f:
        for _ in range(mib):  # random, like the job's local file: on this VM's disk the read
            f.write(os.urandom(1 << 20))  # speed of a cold page depends on what it holds
    s3.upload_file(str(path), BUCKET, KEY, Config=TransferConfig(multipart_threshold=1 << 40))
    path.unlink()


def task(home: Home, name: str, body: str, mode: str | None) -> Path:
    mount = (
        f"file_mounts:\n  ~/data:\n    source: s3://{BUCKET}\n    mode: {mode}\n" if mode else ""
    )
    path = home.path / f"{name}.yaml"
    lines = "".join(f"  {line}\n" for line in body.splitlines())
    path.write_text(f"resources:\n  infra: local\n{mount}run: |\n{lines}")
    return path


def launch(home: Home, cluster: str, path: Path) -> tuple[float, str, str]:
    """(when the launch started, its output, its one-line error or '')."""
    t0 = time.time()
    done = home.ctl("launch", "-c", cluster, str(path), "-y", check=False)
    error = "" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]
    return t0, done.stdout, error


def reads(out: str) -> list[tuple[str, float]]:
    """(path, MB/s) of each of the job's READ lines, in order."""
    return [
        (m.group(1), int(m.group(2)) / float(m.group(3)) / 1e6)
        for m in re.finditer(r"READ (\S+) (\d+) ([0-9.]+)", out)
    ]


def first_read_at(out: str) -> float:
    m = re.search(r"FIRST ([0-9.]+)", out)
    if not m:
        raise SystemExit(f"the job printed no FIRST line:\n{out[-2000:]}")
    return float(m.group(1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mib", type=int, default=256, help="size of the object read")
    p.add_argument("--runs", type=int, default=3, help="launches per figure of part 2")
    args = p.parse_args()
    with moto_server() as emu, stix_home() as home:
        home.env.update({k: v for k, v in emu.env.items() if k != "HOME"})
        home.env["STIX__LOCAL__NETWORK"] = "host"  # nodes reach the emulator on loopback
        put_object(emu, args.mib)
        home.ctl("daemon", "start")
        print(f"object: {args.mib} MiB in s3://{BUCKET} (moto on loopback); local infra")
        # the local file is written in 1 MiB writes, as the agent writes a download: on this
        # kernel a file written in small writes (head, dd bs=128K) reads back from the page
        # cache at a third of the speed, whatever the store
        local = (
            'python3 -c \'import os\nwith open(os.path.expanduser("~/local.bin"),"wb") as f:\n'
            f"    for _ in range({args.mib}): f.write(os.urandom(1<<20))' && sync\n"
        )
        for mode in ("COPY", "MOUNT_CACHED"):
            body = local + READ + f"~/local.bin ~/data/{KEY} ~/local.bin ~/data/{KEY}"
            cluster = f"rd-{mode.lower().replace('_', '')}"
            _, out, error = launch(home, cluster, task(home, cluster, body, mode))
            if error:
                print(f"{mode:13s} skipped: the launch was refused: {error}")
                home.ctl("down", cluster, "-y", check=False)
                continue
            rates = reads(out)
            ours = [v for k, v in rates if k.endswith(KEY)]
            theirs = [v for k, v in rates if k.endswith("local.bin")]
            if not ours or not theirs:
                raise SystemExit(f"{mode}: the job printed no READ lines:\n{out[-2000:]}")
            print(
                f"{mode:13s} sequential read {ours[-1]:8.0f} MB/s = "
                f"{ours[-1] / theirs[-1]:.2f}x a local file ({theirs[-1]:.0f} MB/s), second pass; "
                f"first pass {ours[0] / theirs[0]:.2f}x"
            )
            home.ctl("down", cluster, "-y", check=False)

        base: list[float] = []
        waits: dict[str, list[float]] = {"COPY": [], "MOUNT_CACHED": []}
        refused: dict[str, str] = {}
        first = f"head -c 1 ~/data/{KEY} > /dev/null\necho FIRST $(date +%s.%N)"
        for i in range(args.runs):
            cluster = f"fb-none-{i}"
            t0, out, error = launch(
                home, cluster, task(home, cluster, "echo FIRST $(date +%s.%N)", None)
            )
            if error:
                raise SystemExit(f"the launch without a mount failed: {error}")
            base.append(first_read_at(out) - t0)
            home.ctl("down", cluster, "-y", check=False)
            for mode, times in waits.items():
                if mode in refused:
                    continue
                cluster = f"fb-{mode.lower().replace('_', '')}-{i}"
                t0, out, error = launch(home, cluster, task(home, cluster, first, mode))
                if error:
                    refused[mode] = error
                    home.ctl("down", cluster, "-y", check=False)
                    continue
                times.append(first_read_at(out) - t0)
                home.ctl("down", cluster, "-y", check=False)
        b = median(base)
        print(f"launch to first command, no mount: {b:.2f} s (median of {args.runs})")
        for mode, times in waits.items():
            if mode in refused:
                print(f"launch to first read, {mode:13s}: skipped: {refused[mode]}")
            else:
                t = median(times)
                print(f"launch to first read, {mode:13s}: {t:.2f} s = {t / b:.2f}x no mount")
                if mode == "COPY" and t > b:
                    rate = (args.mib << 20) / (t - b) / 1e6
                    print(f"  (the download before the first read: {rate:.0f} MB/s)")


if __name__ == "__main__":
    main()
