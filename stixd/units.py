"""Service definitions that keep stixd running: a systemd user unit and a launchd agent.

Both are rendered from the templates in ``systemd/`` (packaged as ``stixd/_data/``). Both stop
only the daemon process on shutdown (systemd ``KillMode=process``, launchd
``AbandonProcessGroup``): node agents and jobs the daemon started survive a daemon restart.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import string
import tempfile
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "LAUNCHD_LABEL",
    "LAUNCHD_PLIST_NAME",
    "SYSTEMD_UNIT_NAME",
    "install_unit",
    "next_steps",
    "render_launchd_plist",
    "render_systemd_unit",
    "service_environment",
    "template_path",
]

SYSTEMD_UNIT_NAME = "stixd.service"
LAUNCHD_LABEL = "sh.stix.stixd"
LAUNCHD_PLIST_NAME = f"{LAUNCHD_LABEL}.plist"

ServiceManager = Literal["systemd", "launchd"]

SERVICE_ENV = (
    "STIX_CATALOG_DIR",
    "STIX_CATALOG_URL",
    "STIX_CATALOG_STALE_DAYS",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_EC2",
    "PATH",
)
"""What stixd reads from its environment, carried into the service from the shell that installs
it, so the service runs as `stixctl` would have started it there: the catalog, a cloud profile,
and PATH (local jobs run with the daemon's PATH; a service manager's default is a bare one).
Every ``STIX__SECTION__KEY`` config variable is carried too. Not carried: secrets
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``: a unit file is no
place for them; name a profile instead), and the test and benchmark switches."""
SERVICE_ENV_PREFIX = "STIX__"
_PATH_VALUES = ("STIX_CATALOG_DIR", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")
"""Paths made absolute when installing: the service starts in another directory."""


def service_environment(home: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """``STIX_HOME`` and the `SERVICE_ENV` variables set in ``environ``, checked for the file."""
    env = {"STIX_HOME": _checked_home(home)}
    for name in sorted(environ):
        value = environ[name]
        if not value or not (name in SERVICE_ENV or name.startswith(SERVICE_ENV_PREFIX)):
            continue
        if name in _PATH_VALUES:
            value = os.path.abspath(os.path.expanduser(value))
        env[name] = _plain_text(value, f"value of {name}", f"unset {name} or change it")
    return env


def _systemd_environment(env: Mapping[str, str]) -> str:
    # Environment="K=V" C-unescapes the quoted word and expands specifiers ('%'); '$' is not
    # expanded there, so it stays as it is.
    def quoted(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")

    return "\n".join(f'Environment="{quoted(k)}={quoted(v)}"' for k, v in env.items())


def template_path(name: str) -> Path:
    """A service template: the packaged copy if installed from a wheel, else the repo's."""
    packaged = files("stixd") / "_data" / name
    if isinstance(packaged, Path) and packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[1] / "systemd" / name


def render_systemd_unit(
    stixd_path: str, home: Path, environ: Mapping[str, str] | None = None
) -> str:
    """The systemd user unit running ``stixd --foreground`` with ``STIX_HOME=home`` and the
    `SERVICE_ENV` variables of ``environ``."""
    exe = _checked_executable(stixd_path)
    if any(c in exe for c in "\"'\\"):
        # systemd refuses these in an executable path however they are escaped.
        raise ValueError(
            f"systemd cannot run an executable whose path contains quotes or backslashes: "
            f"{exe!r}; install stix under a path without them"
        )
    template = string.Template(template_path(SYSTEMD_UNIT_NAME).read_text(encoding="utf-8"))
    return template.substitute(
        # Inside "...": spaces are fine, '%' starts a specifier. '$' is not expanded in the
        # executable path, so it stays as it is.
        stixd=exe.replace("%", "%%"),
        environment=_systemd_environment(service_environment(home, environ or {})),
    )


def render_launchd_plist(
    stixd_path: str, home: Path, environ: Mapping[str, str] | None = None
) -> str:
    """The launchd agent plist running ``stixd --foreground`` with ``STIX_HOME=home`` and the
    `SERVICE_ENV` variables of ``environ``."""
    values = {"stixd": _checked_executable(stixd_path), "stix_home": _checked_home(home)}
    template = plistlib.loads(template_path(LAUNCHD_PLIST_NAME).read_bytes())
    # plistlib does the XML escaping; placeholders are only ever replaced inside strings.
    plist = _substitute(template, values)
    plist["EnvironmentVariables"] = service_environment(home, environ or {})
    rendered = plistlib.dumps(plist, sort_keys=False)
    return rendered.decode("utf-8")


def install_unit(
    platform: str,
    stixd_path: str,
    home: Path,
    target_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Write the service definition for ``platform`` (a ``sys.platform`` value) and return
    its path. Re-installing replaces the file atomically."""
    if _service_manager(platform) == "systemd":
        content = render_systemd_unit(stixd_path, home, environ)
        directory = target_dir or _default_dir("systemd")
        path = directory / SYSTEMD_UNIT_NAME
    else:
        content = render_launchd_plist(stixd_path, home, environ)
        directory = target_dir or _default_dir("launchd")
        path = directory / LAUNCHD_PLIST_NAME
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, content)
    return path


def next_steps(platform: str, unit_path: Path | None = None) -> str:
    """The shell commands that start the installed service and keep it running."""
    manager = _service_manager(platform)
    if manager == "systemd":
        lines = []
        if unit_path is not None and unit_path.parent != _default_dir("systemd"):
            lines.append(f"systemctl --user link {shlex.quote(str(unit_path))}")
        lines += [
            "systemctl --user daemon-reload && systemctl --user enable --now stixd",
            "loginctl enable-linger $USER    # keep stixd running while you are logged out",
            "journalctl --user -u stixd -f    # follow its log",
        ]
        return "\n".join(lines)
    plist = (
        shlex.quote(str(unit_path))
        if unit_path is not None
        else f"~/Library/LaunchAgents/{LAUNCHD_PLIST_NAME}"
    )
    return "\n".join(
        [
            f"launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL} 2>/dev/null    # only if loaded",
            f"launchctl bootstrap gui/$(id -u) {plist}",
            f"launchctl print gui/$(id -u)/{LAUNCHD_LABEL}    # check that it runs",
        ]
    )


def _service_manager(platform: str) -> ServiceManager:
    if platform.startswith("linux"):
        return "systemd"
    if platform == "darwin":
        return "launchd"
    raise ValueError(
        f"stix can install a service only on Linux (systemd) or macOS (launchd), not on "
        f"{platform!r}; run `stixd --foreground` under your own process supervisor instead"
    )


def _default_dir(manager: ServiceManager) -> Path:
    if manager == "systemd":
        return Path.home() / ".config" / "systemd" / "user"
    return Path.home() / "Library" / "LaunchAgents"


def _checked_executable(stixd_path: str) -> str:
    if not os.path.isabs(stixd_path):
        raise ValueError(
            f"the stixd path must be absolute, got {stixd_path!r}; "
            "pass the result of shutil.which('stixd')"
        )
    return _plain_text(stixd_path, "stixd path")


def _checked_home(home: Path) -> str:
    # The service starts in another directory, so a relative home must be made absolute now.
    return _plain_text(str(home.expanduser().absolute()), "stix home")


def _plain_text(value: str, what: str, fix: str = "use a path without one") -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(
            f"the {what} {value!r} contains a control character, which a service file "
            f"cannot hold; {fix}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"the {what} {value!r} is not valid UTF-8; {fix}") from exc
    return value


def _substitute(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, str):
        return string.Template(node).substitute(values)
    if isinstance(node, dict):
        return {key: _substitute(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(item, values) for item in node]
    return node


def _write_atomically(path: Path, content: str) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(content)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)  # launchd ignores agents writable by group or others
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
