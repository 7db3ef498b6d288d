"""Where AWS credentials, region and endpoint come from, and what is missing when they don't.

Read in the order the AWS CLI reads them, without touching the network: the environment
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``), then the profile
(``AWS_PROFILE``, else ``default``) of the shared credentials file
(``AWS_SHARED_CREDENTIALS_FILE``, else ``~/.aws/credentials``) and of the config file
(``AWS_CONFIG_FILE``, else ``~/.aws/config``). The instance metadata service is never asked: a
daemon on a laptop must not wait on 169.254.169.254. Profiles that get keys from a role, SSO or
a helper process are reported as not supported yet, by name.
"""

from __future__ import annotations

import configparser
import dataclasses
from collections.abc import Mapping
from pathlib import Path

from stixproto.errors import ProvisionError

DEFAULT_REGION = "us-east-1"
_INDIRECT = ("role_arn", "sso_start_url", "sso_session", "credential_process", "web_identity")


class CredentialsMissing(ProvisionError):
    """No usable AWS credentials; the message says exactly what is missing and where we looked."""

    retryable = False


@dataclasses.dataclass(frozen=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)
    source: str = "environment"
    """Where the keys came from, for `stixctl check` (never the keys themselves)."""
    region: str = DEFAULT_REGION
    """The default region: only used where nothing else names one."""
    endpoint_url: str | None = None
    """An endpoint override (``AWS_ENDPOINT_URL``): a test server, a proxy, an S3-alike."""


def _read(path: Path) -> configparser.ConfigParser | None:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsMissing(f"cannot read {path}: {exc.strerror}") from None
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise CredentialsMissing(f"{path} is not a valid AWS config file: {exc}") from None
    return parser


def _section(parser: configparser.ConfigParser | None, *names: str) -> dict[str, str]:
    if parser is None:
        return {}
    for name in names:
        if parser.has_section(name):
            return dict(parser.items(name))
    return {}


def files(env: Mapping[str, str], home: Path | None = None) -> tuple[Path, Path]:
    """The shared credentials file and the config file ``env`` points at."""
    home = home or Path(env.get("HOME") or Path.home())
    cred_path = Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials")
    conf_path = Path(env.get("AWS_CONFIG_FILE") or home / ".aws" / "config")
    return cred_path, conf_path


Stamp = tuple[tuple[int, int, int] | None, ...]


def stamp(paths: tuple[Path, ...]) -> Stamp:
    """What changes when any of ``paths`` is written, created or removed (one stat each)."""
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = path.expanduser().stat()
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def resolve(env: Mapping[str, str], home: Path | None = None) -> AwsCredentials:
    """The credentials to use, or ``CredentialsMissing`` naming what to set."""
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    cred_path, conf_path = files(env, home)
    cred_file, conf_file = _read(cred_path.expanduser()), _read(conf_path.expanduser())
    creds = _section(cred_file, profile)
    conf = _section(conf_file, f"profile {profile}", profile)
    region = (
        env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or conf.get("region") or ""
    ).strip() or DEFAULT_REGION
    endpoint = (
        env.get("AWS_ENDPOINT_URL_EC2") or env.get("AWS_ENDPOINT_URL") or conf.get("endpoint_url")
    ) or None

    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key or secret:
        if not (key and secret):
            missing = "AWS_SECRET_ACCESS_KEY" if key else "AWS_ACCESS_KEY_ID"
            raise CredentialsMissing(
                f"AWS credentials are half set in the environment: {missing} is missing"
            )
        token = env.get("AWS_SESSION_TOKEN") or None
        return AwsCredentials(key, secret, token, "environment variables", region, endpoint)

    explicit = bool(env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE"))
    if explicit and not creds and not conf:
        raise CredentialsMissing(
            f"AWS profile {profile!r} (from AWS_PROFILE) is in neither {cred_path} nor {conf_path}"
        )
    merged = {**conf, **creds}
    key, secret = merged.get("aws_access_key_id"), merged.get("aws_secret_access_key")
    if key and secret:
        where = cred_path if creds.get("aws_access_key_id") else conf_path
        return AwsCredentials(
            key,
            secret,
            merged.get("aws_session_token") or None,
            f"profile {profile} in {where}",
            region,
            endpoint,
        )
    indirect = [k for k in _INDIRECT if any(name.startswith(k) for name in merged)]
    if indirect:
        raise CredentialsMissing(
            f"AWS profile {profile!r} gets its keys through {indirect[0]}, which stix does not "
            f"support yet; give it aws_access_key_id and aws_secret_access_key, or set "
            f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    if key or secret:
        missing = "aws_secret_access_key" if key else "aws_access_key_id"
        raise CredentialsMissing(f"AWS profile {profile!r} in {cred_path} has no {missing}")
    raise CredentialsMissing(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put "
        f"aws_access_key_id and aws_secret_access_key under [{profile}] in {cred_path}"
    )
