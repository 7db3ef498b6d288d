"""Package the on-node agent as a zipapp named by its build id.

Standard library only. The archive holds the agent package as ``stix_agent/`` (the agent uses
only relative imports, so the name is free), ``stix_agent/_build.txt`` with the build id the
agent reports in ``hello``, and a ``__main__.py`` that runs its command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipapp
from pathlib import Path

from stixd.agent.buildinfo import BUILD_FILE, source_build_id, source_files

AGENT_PACKAGE = "stix_agent"
AGENT_SOURCE = Path(__file__).resolve().parent / "agent"
_MAIN = f"import sys\n\nfrom {AGENT_PACKAGE}.cli import main\n\nsys.exit(main())\n"
_INTERPRETER = "/usr/bin/env python3"


def build_id(source: Path = AGENT_SOURCE) -> str:
    """Short hash of the agent's source files: any change to them is a new build."""
    return source_build_id(source)


def zipapp_name(build: str) -> str:
    return f"stix-agent-{build}.pyz"


def build_agent_zipapp(dest_dir: Path, *, source: Path = AGENT_SOURCE) -> Path:
    """``dest_dir/stix-agent-<build>.pyz``, built atomically, or reused if already there."""
    build = build_id(source)
    target = dest_dir / zipapp_name(build)
    if target.exists():
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stix-agent-build-") as staging:
        package = Path(staging) / AGENT_PACKAGE
        for path in source_files(source):
            copy = package / path.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        (package / BUILD_FILE).write_text(build + "\n")
        (Path(staging) / "__main__.py").write_text(_MAIN)
        fd, partial = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=dest_dir)
        os.close(fd)
        try:
            zipapp.create_archive(staging, partial, interpreter=_INTERPRETER, compressed=True)
            os.chmod(partial, 0o600)  # run as `python PYZ`, never on its own
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            raise
    return target
