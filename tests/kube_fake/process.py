"""The fake as a test uses it: `python -m tests.kube_fake` in a process of its own, with
kubectl and the admin knobs at hand, and a stop that proves nothing of it is left;
`with FakeProcess(path, *args) as fake:` stops it however the block ends."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.kube_fake.sandbox import pids_marked
from tests.kube_fake.tls import client_context

REPO = Path(__file__).resolve().parents[2]


class FakeProcess:
    def __init__(self, workdir: Path, *extra: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.kubeconfig = workdir / "kubeconfig"
        self.state = workdir / "state"
        self.log = workdir / "kube-fake.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])
            ),
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.kube_fake",
                    "--port",
                    "0",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--state-dir",
                    str(self.state),
                    *extra,
                ],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while not self.kubeconfig.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the kube fake did not start: {self.log.read_text()}")
            time.sleep(0.02)
        config = yaml.safe_load(self.kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        self.url: str = cluster["server"]
        ca = cluster.get("certificate-authority-data")  # --tls: the admin knobs trust its CA
        self._tls = client_context(base64.b64decode(ca).decode()) if ca else None

    def __enter__(self) -> FakeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """The machine's kubectl against this fake (its own discovery cache, never ~/.kube)."""
        proc = subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                str(self.kubeconfig),
                "--cache-dir",
                str(self.workdir / "kube-cache"),
                *args,
            ],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} -> {proc.returncode}: {proc.stderr}")
        return proc

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def admin(self, knob: str, **body: Any) -> Any:
        """Turn a knob: evict, delete, faults, nodes, compact (routes.py, /fake/...)."""
        request = urllib.request.Request(
            f"{self.url}/fake/{knob}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        direct = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),  # loopback only
            urllib.request.HTTPSHandler(context=self._tls),
        )
        with direct.open(request, timeout=10) as answer:
            return json.load(answer)

    def pod_processes(self) -> list[int]:
        return pids_marked(str(self.state))

    def stop(self) -> None:
        """SIGTERM (the fake kills its pods and removes their sandboxes), SIGKILL past a
        deadline; then, as a safety net only, kill whatever pod process is still marked."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        for pid in self.pod_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
