"""Layered configuration: the schema, and a loader that merges and checks every layer.

Layers, lowest to highest priority: the packaged default file, the user file
(``<stix home>/config.yaml``), the project file (``.stix.yaml`` in the client's working
directory), each ``--config FILE``, layers a client sent already parsed, and finally
``STIX__SECTION__KEY=value`` environment variables. Mappings merge key by key; scalars and
lists replace. Each layer is validated on its own before merging, so an error names the file
(or variable) the mistake is in, and the key path inside it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeVar, runtime_checkable

import msgspec
import msgspec.inspect as mi

from stixproto import user_yaml
from stixproto.bounds import MAX_RESTARTS, MAX_SECONDS, IdleMinutes

__all__ = [
    "ENV_PREFIX",
    "ApiConfig",
    "AutostopConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "NodeCap",
    "RestartIntensity",
    "StorageConfig",
    "config_to_dict",
    "default_config_path",
    "load_config",
]

ENV_PREFIX = "STIX__"
USER_FILE_NAME = "config.yaml"
PROJECT_FILE_NAME = ".stix.yaml"

# Seconds or minutes; the bound keeps `.inf` (and `nan`, which no bound admits) out of timers.
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class RestartIntensity(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """More than ``max_restarts`` crashes within ``within_seconds`` marks an actor failed."""

    max_restarts: Annotated[int, msgspec.Meta(ge=0, le=MAX_RESTARTS)] = 5
    within_seconds: PositiveFloat = 60.0


class AutostopConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    grace_minutes: NonNegativeFloat = 10.0
    default_idle_minutes: IdleMinutes | None = None


class DaemonConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    restart_intensity: RestartIntensity = msgspec.field(default_factory=RestartIntensity)
    log_level: LogLevel = "info"
    request_timeout_seconds: PositiveFloat = 3600.0
    health_check_seconds: PositiveFloat = 10.0
    node_grace_seconds: NonNegativeFloat = 60.0
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256
    client_idle_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    client_stall_seconds: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 120.0
    retry_until_up_seconds: PositiveFloat = 30.0
    retry_until_up_max_seconds: PositiveFloat = 150.0
    serve_probe_seconds: PositiveFloat = 10.0
    """How often a replica's readiness is probed (SkyServe's 10 s)."""
    serve_starting_probe_seconds: Annotated[float, msgspec.Meta(ge=0.05, le=60)] = 1.0
    """How often a STARTING replica is probed until its first pass (so a server that has come
    up enters rotation within about this long, not a whole probe period later)."""
    serve_round_seconds: PositiveFloat = 5.0
    """How often a service takes its balancer's traffic when nothing wakes it sooner."""
    balancer_host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)] = "127.0.0.1"
    """The address services' load balancers listen on: this machine only by default; a team
    server whose users call services from their own machines sets 0.0.0.0 (every address), and
    a client of its HTTP API is then shown each endpoint at the host it reached the API by."""
    serve_decision_seconds: PositiveFloat = 20.0
    """How often the autoscaler may move a service's target (SkyServe's 20 s; 5 s at zero)."""
    serve_qps_window_seconds: PositiveFloat = 60.0
    """The autoscaler's requests per second are over the last this many seconds (SkyServe's)."""
    lease_seconds: Annotated[float, msgspec.Meta(ge=0, le=600)] = 15.0
    """With `db` on PostgreSQL: how long an actor's lease lasts unrenewed, so how soon another
    replica takes over the actors of one that died (stixd/store/leases.py); 0 turns leases off
    (one replica alone on its database)."""
    replica_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    """This replica's name among those on one database; None: this host's name and home."""
    store_readers: Annotated[int, msgspec.Meta(ge=0, le=64)] = 2
    """Read-only connections of the SQLite store beside its one writer, so reads never wait
    for writes (stixd/store/sqlite_reads.py); 0: every read on the writer's connection."""


class ApiConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The HTTP API beside the socket (`stixd.control.http_api`); `stixctl api start|stop`
    overrides ``enabled``, ``host`` and ``port`` until the next one."""

    enabled: bool = False
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 46580
    certfile: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    keyfile: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    metrics_open_on_loopback: bool = False
    """`GET /metrics` without a token from 127.0.0.1 or ::1 (a Prometheus beside the server);
    a scrape from elsewhere always needs a token, of any role."""


Names = Annotated[
    tuple[Annotated[str, msgspec.Meta(min_length=1, max_length=253)], ...],
    msgspec.Meta(max_length=10_000),
]


class WorkspaceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """One of the server's ``workspaces`` (SkyPilot's): where its objects may run, and who may
    see it (`stixd.control.workspaces`)."""

    allowed_clouds: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] | None = None
    """The infras its launches may use (None: any the server allows). Naming ``local`` or
    ``ssh`` lets its users run on the server's own machine or SSH hosts over HTTP."""
    private: bool = False
    allowed_users: Names = ()
    """Who may see and use a private workspace (admins always may)."""


WorkspaceName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]

Url = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$", max_length=2048)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=r"^[^\n\r\x00]+$")]
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=8192, pattern=r"^[^\n\r\x00]+$")]


RoleArn = Annotated[str, msgspec.Meta(pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/\S+$")]


class S3StoreConfig(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    """S3 (and R2): where it is reached; credentials come from AWS's usual places."""

    endpoint_url: Url | None = None
    region: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{1,40}$")] | None = None
    # what a node's rclone gets: auto|scoped (STS, bucket-scoped) or daemon (the daemon's keys)
    node_credentials: Literal["auto", "scoped", "daemon"] | None = None  # null: auto
    node_credentials_seconds: Annotated[int, msgspec.Meta(ge=900, le=129600)] | None = None
    node_role_arn: RoleArn | None = None


class R2StoreConfig(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    """R2: its S3 endpoint, and Cloudflare's API for the nodes' temporary credentials."""

    endpoint_url: Url | None = None
    # what a node's rclone gets: auto|scoped (temporary keys for that bucket) or daemon
    node_credentials: Literal["auto", "scoped", "daemon"] | None = None  # null: auto
    node_credentials_seconds: Annotated[int, msgspec.Meta(ge=900, le=604800)] | None = None
    api_token: Secret | None = None  # null: CLOUDFLARE_API_TOKEN
    api_endpoint: Url | None = None  # null: https://api.cloudflare.com/client/v4
    account_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")] | None = None


class GcsStoreConfig(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    endpoint: Url | None = None
    api_endpoint: Url | None = None  # the JSON API's root when not Google's; credentials sent
    project: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9.:-]{0,99}$")] | None = None
    service_account_file: Text | None = None
    use_metadata_server: bool = False
    # what a node's rclone gets: auto|scoped (an STS token kept to the bucket) or daemon (the key)
    node_credentials: Literal["auto", "scoped", "daemon"] | None = None  # null: auto
    sts_endpoint: Url | None = None  # null: Google's


class AzureStoreConfig(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True
):
    account: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9]{1,64}$")] | None = None
    key: Secret | None = None
    endpoint: Url | None = None
    connection_string: Secret | None = None
    node_credentials_seconds: Annotated[int, msgspec.Meta(ge=900, le=604800)] | None = None


class StorageConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How the daemon reaches the object stores (beside the environment, which it also reads:
    a key set here wins), and its policy for buckets no storage owns."""

    s3: S3StoreConfig = msgspec.field(default_factory=S3StoreConfig)
    r2: R2StoreConfig = msgspec.field(default_factory=R2StoreConfig)
    gcs: GcsStoreConfig = msgspec.field(default_factory=GcsStoreConfig)
    azure: AzureStoreConfig = msgspec.field(default_factory=AzureStoreConfig)
    leak_check_minutes: PositiveFloat = 10.0
    leak_min_age_minutes: NonNegativeFloat = 10.0
    delete_leaks: bool = False

    def stores(self) -> dict[str, dict[str, Any]]:
        """Each store's keys that are set (what `open_stores` reads), by store name."""
        fields = {name: getattr(self, name) for name in self.__struct_fields__}
        return {
            name: msgspec.to_builtins(value)
            for name, value in fields.items()
            if isinstance(value, msgspec.Struct)
        }


Section = TypeVar("Section", bound=msgspec.Struct)


@runtime_checkable
class NodeCap(Protocol):
    """A section that caps the nodes one cluster may have on its infra (``local.max_nodes``)."""

    max_nodes: int


class ConfigBase(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What every `Config` has; its fields are set by `config_schema`, which puts each infra's
    section (named by the provider registry) between ``daemon`` and ``allowed_clouds``."""

    if TYPE_CHECKING:  # the fields `config_schema` defines, as mypy sees them
        autostop: AutostopConfig = msgspec.field(default_factory=AutostopConfig)
        daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
        api: ApiConfig = msgspec.field(default_factory=ApiConfig)
        storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
        allowed_clouds: tuple[str, ...] | None = None
        db: str | None = None
        workspaces: dict[str, WorkspaceConfig] = {}
        active_workspace: str | None = None

    def sections(self) -> dict[str, msgspec.Struct]:
        """Each infra's section by infra name, in registry order."""
        return {
            name: getattr(self, name)
            for name in type(self).__struct_fields__
            if name not in _CORE_FIELDS
        }

    def section(self, name: str, kind: type[Section]) -> Section:
        """Infra ``name``'s section, which must be a ``kind``."""
        found = self.sections().get(name)
        if not isinstance(found, kind):
            raise LookupError(f"no {kind.__name__} section {name!r} in the config")
        return found


_CORE_FIELDS = (
    "autostop",
    "daemon",
    "api",
    "storage",
    "allowed_clouds",
    "db",
    "workspaces",
    "active_workspace",
)
DatabaseUrl = Annotated[str, msgspec.Meta(pattern=r"^postgres(ql)?://", max_length=4096)]
"""The store's database (`db: postgresql://user@host:port/dbname`, SkyPilot's key): None keeps
it in SQLite in the home."""


def config_schema(sections: Iterable[tuple[str, type[msgspec.Struct]]]) -> type[ConfigBase]:
    """The `Config` type holding ``sections`` (infra name, section type), as the registry says."""
    fields: list[tuple[str, Any, Any]] = [
        ("autostop", AutostopConfig, msgspec.field(default_factory=AutostopConfig)),
        ("daemon", DaemonConfig, msgspec.field(default_factory=DaemonConfig)),
        ("api", ApiConfig, msgspec.field(default_factory=ApiConfig)),
        ("storage", StorageConfig, msgspec.field(default_factory=StorageConfig)),
        *((name, kind, msgspec.field(default_factory=kind)) for name, kind in sections),
        # None: every enabled infra may be used.
        (
            "allowed_clouds",
            Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] | None,
            None,
        ),
        ("db", DatabaseUrl | None, None),
        ("workspaces", dict[WorkspaceName, WorkspaceConfig], msgspec.field(default_factory=dict)),
        ("active_workspace", WorkspaceName | None, None),
    ]
    schema = msgspec.defstruct(
        "Config",
        fields,
        bases=(ConfigBase,),
        module=__name__,
        forbid_unknown_fields=True,
        frozen=True,
        kw_only=True,
    )
    assert issubclass(schema, ConfigBase)
    return schema


def _registry_sections() -> list[tuple[str, type[msgspec.Struct]]]:
    from stixd.providers.all import ENTRIES  # the composition root lists the infras

    return [(e.name, e.config) for e in ENTRIES if e.config is not None]


if TYPE_CHECKING:
    Config = ConfigBase
else:
    Config = config_schema(_registry_sections())
    Config.__doc__ = "The effective configuration. ``Config()`` equals the documented default file."


class ConfigError(ValueError):
    """A configuration layer is unreadable or invalid.

    ``source`` names the layer (a file as the user would write it, ``environment variable
    STIX__...``, or the name a client gave its layer); ``key_path`` is the dotted key inside
    it, or None when the whole layer is at fault.
    """

    def __init__(self, source: str, key_path: str | None, problem: str) -> None:
        self.source = source
        self.key_path = key_path
        self.problem = problem
        where = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{where}: {problem}")


def default_config_path() -> Path:
    """The documented default config: the packaged copy if installed from a wheel, else the
    repository's ``config/default.yaml`` (source checkouts and editable installs)."""
    packaged = files("stixd") / "_data" / "default.yaml"
    if isinstance(packaged, Path) and packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[1] / "config" / "default.yaml"


def load_config(
    home: Path,
    *,
    cwd: Path | None = None,
    extra_files: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    overrides: Sequence[tuple[str, Mapping[str, Any]]] = (),
    schema: type[ConfigBase] | None = None,
) -> Config:
    """Merge every configuration layer into one validated :class:`Config`.

    ``home`` is the stix home holding the user file. ``cwd`` is where the project file is
    looked for (no project layer when None). ``extra_files`` are ``--config`` files, which
    must exist. ``env`` defaults to ``os.environ``; pass ``{}`` for no environment layer.
    ``schema`` is the `Config` type of another registry (`config_schema`), for tests.
    Raises :class:`ConfigError` naming the layer and key at fault.
    """
    cls = schema or Config
    layers: list[tuple[str, Mapping[str, Any]]] = []

    default_path = default_config_path()
    default_layer = _read_layer(default_path, _display_path(default_path))
    if default_layer is None:
        raise ConfigError(
            str(default_path), None, "stix's default config file is missing; reinstall stix"
        )
    layers.append((_display_path(default_path), default_layer))

    user_path = home / USER_FILE_NAME
    user_layer = _read_layer(user_path, _display_path(user_path))
    if user_layer is not None:
        layers.append((_display_path(user_path), user_layer))

    if cwd is not None:
        project_path = cwd / PROJECT_FILE_NAME
        project_source = _display_path(project_path, cwd=cwd)
        project_layer = _read_layer(project_path, project_source)
        if project_layer is not None:
            layers.append((project_source, project_layer))

    for extra in extra_files:
        extra_layer = _read_layer(extra, str(extra))
        if extra_layer is None:
            raise ConfigError(
                str(extra), None, "config file given with --config does not exist; check the path"
            )
        layers.append((str(extra), extra_layer))

    for source, data in overrides:
        if not isinstance(data, Mapping):
            raise ConfigError(source, None, _expected_mapping(cls, data))
        layers.append((source, data))

    layers.extend(_env_layers(os.environ if env is None else env))

    merged: dict[str, Any] = {}
    for source, data in layers:
        _check_layer(data, cls, source, ())
        merged = _deep_merge(merged, data)
    try:
        return msgspec.convert(merged, cls)
    except msgspec.ValidationError as exc:  # every layer passed, so this is a stix bug
        raise ConfigError("merged configuration", None, f"{exc}; please report this") from exc


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain builtins (dicts, lists, numbers, strings, None) for printing or JSON/YAML."""
    # Through JSON so tuples come back as lists, which YAML and JSON printers both accept.
    result: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(cfg))
    return result


# --- reading layers -----------------------------------------------------------------------


def _display_path(path: Path, *, cwd: Path | None = None) -> str:
    """A path as the user would type it: relative to ``cwd`` when inside it, else ``~/...``."""
    if cwd is not None and path.is_relative_to(cwd):
        return str(path.relative_to(cwd))
    try:
        user_home = Path.home()
    except RuntimeError:  # no HOME and no passwd entry: show the path as it is
        return str(path)
    if path.is_relative_to(user_home):
        return "~/" + str(path.relative_to(user_home))
    return str(path)


def _read_layer(path: Path, source: str) -> dict[str, Any] | None:
    """The mapping in a YAML file; None if the file does not exist; {} if it is empty."""
    try:
        data = user_yaml.load(user_yaml.read_file(path))
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, None, f"not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(source, None, f"cannot read it: {exc.strerror or exc}") from exc
    except user_yaml.YamlError as exc:
        raise ConfigError(source, None, _yaml_problem(exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(source, None, _expected_mapping(Config, data))
    return data


def _yaml_problem(exc: user_yaml.YamlError) -> str:
    return f"invalid YAML{exc.where}: {exc.problem}" if exc.syntax else str(exc)


def _env_layers(env: Mapping[str, str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """One layer per ``STIX__A__B=value`` variable, in name order; values are read as YAML."""
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        source = f"environment variable {name}"
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if not all(parts):
            raise ConfigError(
                source,
                None,
                "malformed name; write it as STIX__SECTION__KEY, e.g. "
                "STIX__AUTOSTOP__GRACE_MINUTES",
            )
        try:
            value: Any = user_yaml.load(env[name])
        except user_yaml.YamlError as exc:
            problem = f"value {env[name]!r} is not valid YAML; quote it" if exc.syntax else str(exc)
            raise ConfigError(source, ".".join(parts), problem) from None
        for part in reversed(parts):
            value = {part: value}
        yield source, value


def _deep_merge(lower: Mapping[str, Any], upper: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(lower)
    for key, value in upper.items():
        below = merged.get(key)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            merged[key] = _deep_merge(below, value)
        else:
            merged[key] = value
    return merged


# --- validating one layer -----------------------------------------------------------------


def _check_layer(
    data: Mapping[Any, Any], cls: type[msgspec.Struct], source: str, path: tuple[str, ...]
) -> None:
    """Validate a partial layer against ``cls``: every key optional, every value checked."""
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    for raw_key, value in data.items():
        key = str(raw_key)
        key_path = (*path, key)
        field = fields.get(key) if isinstance(raw_key, str) else None
        if field is None:
            raise ConfigError(
                source, ".".join(key_path), f"unknown key ({_suggest(key, cls, path)})"
            )
        info = mi.type_info(field.type)
        if isinstance(info, mi.StructType):
            if not isinstance(value, Mapping):
                raise ConfigError(source, ".".join(key_path), _expected_mapping(info.cls, value))
            _check_layer(value, info.cls, source, key_path)
            continue
        try:
            msgspec.convert(value, field.type)
        except msgspec.ValidationError as exc:
            problem = f"expected {_describe(info)}, got {_show(value)}"
            raise ConfigError(source, ".".join(key_path), problem) from exc


def _suggest(key: str, cls: type[msgspec.Struct], path: tuple[str, ...]) -> str:
    names = [f.name for f in msgspec.structs.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    # Right name, wrong section: look for it anywhere else in the schema.
    here = ".".join(path)
    elsewhere = {
        p.rpartition(".")[2]: p for p in _key_paths(Config, ()) if p.rpartition(".")[0] != here
    }
    close = difflib.get_close_matches(key, list(elsewhere), n=1)
    if close:
        return f"did you mean '{elsewhere[close[0]]}'?"
    return "known keys here: " + ", ".join(names)


def _key_paths(cls: type[msgspec.Struct], path: tuple[str, ...]) -> Iterator[str]:
    for field in msgspec.structs.fields(cls):
        info = mi.type_info(field.type)
        yield ".".join((*path, field.name))
        if isinstance(info, mi.StructType):
            yield from _key_paths(info.cls, (*path, field.name))


def _expected_mapping(cls: type[msgspec.Struct], value: object) -> str:
    keys = ", ".join(f.name for f in msgspec.structs.fields(cls))
    return f"expected a mapping with keys {keys}, got {_show(value)}"


def _describe(info: mi.Type) -> str:
    """A type as a user reads it: 'a number >= 0 or null'."""
    if isinstance(info, mi.UnionType):
        return " or ".join(_describe(t) for t in info.types)
    if isinstance(info, mi.NoneType):
        return "null"
    if isinstance(info, mi.BoolType):
        return "true or false"
    if isinstance(info, mi.IntType):
        return "an integer" + _bounds(info)
    if isinstance(info, mi.FloatType):
        return "a number" + _bounds(info)
    if isinstance(info, mi.StrType):
        return "a string"
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(repr(v) for v in info.values)
    if isinstance(info, mi.ListType | mi.VarTupleType):
        items = {mi.StrType: "strings", mi.IntType: "integers", mi.FloatType: "numbers"}
        of = items.get(type(info.item_type), f"items that are each {_describe(info.item_type)}")
        non_empty = "non-empty " if info.min_length else ""
        return f"a {non_empty}list of {of}"
    if isinstance(info, mi.StructType):
        return "a mapping"
    return str(info)


def _bounds(info: mi.IntType | mi.FloatType) -> str:
    parts = [
        f"{op} {_number(bound)}"
        for op, bound in ((">=", info.ge), (">", info.gt), ("<=", info.le), ("<", info.lt))
        if bound is not None
    ]
    return (" " + " and ".join(parts)) if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _show(value: object) -> str:
    """A value as it would look in YAML, short enough for a one-line message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
