"""A throw-away PostgreSQL server for the tests (TESTBED.md §6): initdb in a temporary folder
(as the `postgres` user when run as root: initdb refuses root), pg_ctl on a free loopback port
with fsync off, and a fresh database per test copied from an empty template."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATE = "stix_template"


def binaries() -> Path | None:
    """The newest PostgreSQL's bin folder (Debian's layout), or None if none is installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: p.split("/")[4])
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    bin: Path
    folder: Path
    port: int
    _numbers: itertools.count[int] = field(default_factory=itertools.count)

    def _as_owner(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)

    def psql(self, database: str, sql: str) -> str:
        out = subprocess.run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "stix",
             "-d", database, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
            check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return out.stdout.strip()

    def url(self, database: str, user: str = "stix") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def fresh(self) -> str:
        """The URL of a new, empty database of its own."""
        name = f"t{os.getpid()}_{next(self._numbers)}"
        self.psql("postgres", f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.url(name)

    def require_password(self, user: str, password: str) -> None:
        """A role `user` that logs in only with `password` (every other role is trusted)."""
        self.psql("postgres", f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        hba = self.folder / "data" / "pg_hba.conf"
        hba.write_text(f"host all {user} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self.psql("postgres", "SELECT pg_reload_conf()")
        env = {**os.environ, "PGPASSWORD": f"not-{password}"}
        for _ in range(100):  # the server reads the file again in its own time
            tried = subprocess.run(
                [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", user,
                 "-d", "postgres", "-c", "select 1"],
                capture_output=True, timeout=30, env=env,
            )  # fmt: skip
            if tried.returncode != 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"the server still lets {user} in without the password")

    def stop(self) -> None:
        subprocess.run(
            self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m",
                           "immediate", "-w", "stop"),
            capture_output=True, timeout=30,
        )  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)


def start(bin: Path, *, durable: bool = False) -> PgServer:
    """A server of its own; `durable`: with fsync and synchronous commits, as one in use runs
    (the tests' server skips them: nothing there must outlive a crash of the machine)."""
    folder = Path(tempfile.mkdtemp(prefix="stixpg", dir="/tmp"))
    server = PgServer(bin, folder, _free_port())
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
        subprocess.run(
            server._as_owner(str(bin / "initdb"), "-D", str(folder / "data"), "-U", "stix",
                             "--auth=trust", "-E", "UTF8", "--no-instructions"),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -p {server.port} -k {folder}"
        if not durable:
            options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        subprocess.run(
            server._as_owner(str(bin / "pg_ctl"), "-D", str(folder / "data"), "-l",
                             str(folder / "pg.log"), "-w", "-o", options, "start"),
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        server.psql("postgres", f"CREATE DATABASE {TEMPLATE} TEMPLATE template0")
    except BaseException:
        server.stop()
        raise
    return server
