"""Behaviour of the layered config loader: which layer wins, and what a mistake looks like."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from stixd.config import (
    Config,
    ConfigError,
    config_to_dict,
    default_config_path,
    load_config,
)
from stixd.providers.local.config import LocalConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake $HOME holding the stix home ~/.stix, so messages can say '~/.stix/...'."""
    monkeypatch.setenv("HOME", str(tmp_path))
    stix_home = tmp_path / ".stix"
    stix_home.mkdir()
    return stix_home


@pytest.fixture
def project(tmp_path: Path) -> Path:
    cwd = tmp_path / "project"
    cwd.mkdir()
    return cwd


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


NODES_RANGE = "expected an integer >= 1 and <= 10000"


def grace(minutes: float) -> dict[str, Any]:
    return {"autostop": {"grace_minutes": minutes}}


def test_default_file_is_the_repo_copy_in_a_source_checkout() -> None:
    assert default_config_path() == REPO / "config" / "default.yaml"


def test_default_file_loads_and_agrees_with_the_built_in_defaults(user_home: Path) -> None:
    # Nothing but the default file: the documented defaults are exactly Config()'s.
    assert load_config(user_home, env={}) == Config()
    raw = yaml.safe_load(default_config_path().read_text(encoding="utf-8"))
    assert msgspec.convert(raw, Config) == Config()
    assert set(raw) == set(config_to_dict(Config()))


def test_default_values_are_the_documented_ones(user_home: Path) -> None:
    cfg = load_config(user_home, env={})
    assert cfg.autostop.grace_minutes == 10
    assert cfg.autostop.default_idle_minutes is None
    assert cfg.daemon.restart_intensity.max_restarts == 5
    assert cfg.daemon.restart_intensity.within_seconds == 60
    assert cfg.daemon.log_level == "info"
    assert cfg.daemon.request_timeout_seconds == 3600
    assert cfg.section("local", LocalConfig).max_nodes == 16
    assert cfg.allowed_clouds is None


# Each entry puts grace_minutes=value into one layer, lowest priority first.
LayerSetter = Callable[[Path, Path, Path, float], dict[str, Any]]


def _in_user_file(home: Path, cwd: Path, tmp: Path, value: float) -> dict[str, Any]:
    write_yaml(home / "config.yaml", grace(value))
    return {}


def _in_project_file(home: Path, cwd: Path, tmp: Path, value: float) -> dict[str, Any]:
    write_yaml(cwd / ".stix.yaml", grace(value))
    return {}


def _in_first_config_flag(home: Path, cwd: Path, tmp: Path, value: float) -> dict[str, Any]:
    return {"extra_files": [write_yaml(tmp / "first.yaml", grace(value))]}


def _in_second_config_flag(home: Path, cwd: Path, tmp: Path, value: float) -> dict[str, Any]:
    return {"extra_files": [write_yaml(tmp / "second.yaml", grace(value))]}


def _in_client_override(home: Path, cwd: Path, tmp: Path, value: float) -> dict[str, Any]:
    return {"overrides": [("client request", grace(value))]}


def _in_environment(home: Path, cwd: Path, tmp: Path, value: float) -> dict[str, Any]:
    return {"env": {"STIX__AUTOSTOP__GRACE_MINUTES": str(value)}}


LAYERS: list[LayerSetter] = [
    _in_user_file,
    _in_project_file,
    _in_first_config_flag,
    _in_second_config_flag,
    _in_client_override,
    _in_environment,
]


@pytest.mark.parametrize("top", range(len(LAYERS)), ids=[f.__name__[4:] for f in LAYERS])
def test_each_layer_wins_over_every_layer_below_it(
    top: int, user_home: Path, project: Path, tmp_path: Path
) -> None:
    kwargs: dict[str, Any] = {"cwd": project, "env": {}}
    for level in range(top + 1):
        extra = LAYERS[level](user_home, project, tmp_path, float(level + 1))
        if "extra_files" in extra:
            kwargs["extra_files"] = [*kwargs.get("extra_files", []), *extra["extra_files"]]
        else:
            kwargs.update(extra)
    assert load_config(user_home, **kwargs).autostop.grace_minutes == top + 1


def test_mappings_merge_key_by_key_across_layers(user_home: Path, project: Path) -> None:
    write_yaml(user_home / "config.yaml", {"daemon": {"log_level": "debug"}})
    write_yaml(project / ".stix.yaml", {"daemon": {"restart_intensity": {"max_restarts": 1}}})
    cfg = load_config(user_home, cwd=project, env={})
    assert cfg.daemon.log_level == "debug"
    assert cfg.daemon.restart_intensity.max_restarts == 1
    # Untouched keys keep the defaults from below.
    assert cfg.daemon.restart_intensity.within_seconds == 60
    assert cfg.daemon.request_timeout_seconds == 3600


def test_a_list_replaces_the_list_below_instead_of_extending_it(
    user_home: Path, project: Path
) -> None:
    write_yaml(user_home / "config.yaml", {"allowed_clouds": ["local", "aws"]})
    write_yaml(project / ".stix.yaml", {"allowed_clouds": ["local"]})
    assert load_config(user_home, cwd=project, env={}).allowed_clouds == ("local",)


def test_null_in_a_higher_layer_turns_a_setting_back_off(user_home: Path, project: Path) -> None:
    write_yaml(user_home / "config.yaml", {"autostop": {"default_idle_minutes": 30}})
    write_yaml(project / ".stix.yaml", {"autostop": {"default_idle_minutes": None}})
    assert load_config(user_home, cwd=project, env={}).autostop.default_idle_minutes is None


def test_missing_user_and_project_files_are_skipped(user_home: Path, project: Path) -> None:
    assert not (user_home / "config.yaml").exists()
    assert load_config(user_home, cwd=project, env={}) == Config()


def test_an_empty_file_is_an_empty_layer(user_home: Path) -> None:
    (user_home / "config.yaml").write_text("# nothing set yet\n", encoding="utf-8")
    assert load_config(user_home, env={}) == Config()


def test_environment_variables_nest_on_double_underscores_and_parse_as_yaml(
    user_home: Path,
) -> None:
    env = {
        "STIX__AUTOSTOP__GRACE_MINUTES": "0",
        "STIX__DAEMON__RESTART_INTENSITY__MAX_RESTARTS": "2",
        "STIX__ALLOWED_CLOUDS": "[local, aws]",
        "STIX__AUTOSTOP__DEFAULT_IDLE_MINUTES": "null",
        "STIX_HOME": "/elsewhere",  # single underscore: not a config variable
        "PATH": "/usr/bin",
    }
    cfg = load_config(user_home, env=env)
    assert cfg.autostop.grace_minutes == 0
    assert cfg.daemon.restart_intensity.max_restarts == 2
    assert cfg.allowed_clouds == ("local", "aws")
    assert cfg.autostop.default_idle_minutes is None


def test_environment_defaults_to_the_process_environment(
    user_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STIX__LOCAL__MAX_NODES", "3")
    assert load_config(user_home).section("local", LocalConfig).max_nodes == 3
    assert load_config(user_home, env={}).section("local", LocalConfig).max_nodes == 16


def test_unknown_key_names_the_file_and_suggests_the_right_key(user_home: Path) -> None:
    write_yaml(user_home / "config.yaml", {"autostop": {"grace_minuts": 5}})
    with pytest.raises(ConfigError) as err:
        load_config(user_home, env={})
    assert str(err.value) == (
        "~/.stix/config.yaml: autostop.grace_minuts: unknown key (did you mean 'grace_minutes'?)"
    )
    assert err.value.source == "~/.stix/config.yaml"
    assert err.value.key_path == "autostop.grace_minuts"


def test_key_in_the_wrong_section_suggests_where_it_belongs(user_home: Path, project: Path) -> None:
    write_yaml(project / ".stix.yaml", {"max_nodes": 4})
    with pytest.raises(ConfigError) as err:
        load_config(user_home, cwd=project, env={})
    assert str(err.value) == (
        ".stix.yaml: max_nodes: unknown key (did you mean 'local.max_nodes'?)"
    )


def test_unknown_key_without_a_near_miss_lists_the_known_keys(user_home: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(user_home, env={}, overrides=[("client", {"zzz": 1})])
    assert str(err.value) == (
        "client: zzz: unknown key "
        "(known keys here: autostop, daemon, api, storage, local, aws, fake, kubernetes, "
        "allowed_clouds, db, workspaces, active_workspace)"
    )


def test_wrong_type_names_the_file_the_key_and_what_was_expected(
    user_home: Path, project: Path
) -> None:
    (project / ".stix.yaml").write_text("autostop:\n  grace_minutes: soon\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(user_home, cwd=project, env={})
    expected = "expected a number >= 0 and <= 31536000, got 'soon'"
    assert str(err.value) == f".stix.yaml: autostop.grace_minutes: {expected}"
    assert err.value.source == ".stix.yaml"
    assert err.value.key_path == "autostop.grace_minutes"


@pytest.mark.parametrize(
    ("layer", "key_path", "message"),
    [
        (grace(-1), "autostop.grace_minutes", "expected a number >= 0 and <= 31536000, got -1"),
        (grace(True), "autostop.grace_minutes", "expected a number >= 0 and <= 31536000, got true"),
        (
            {"local": {"max_nodes": 2.5}},
            "local.max_nodes",
            "expected an integer >= 1 and <= 10000, got 2.5",
        ),
        (
            {"local": {"max_nodes": 0}},
            "local.max_nodes",
            "expected an integer >= 1 and <= 10000, got 0",
        ),
        (
            {"daemon": {"request_timeout_seconds": 0}},
            "daemon.request_timeout_seconds",
            "expected a number > 0 and <= 31536000, got 0",
        ),
        (
            {"autostop": {"default_idle_minutes": "1h"}},
            "autostop.default_idle_minutes",
            "expected a number >= 0 and <= 525600 or null, got '1h'",
        ),
        (
            {"allowed_clouds": []},
            "allowed_clouds",
            "expected a non-empty list of strings or null, got []",
        ),
        (
            {"daemon": {"log_level": "verbose"}},
            "daemon.log_level",
            "expected one of 'critical', 'debug', 'error', 'info', 'warning', got 'verbose'",
        ),
        (
            {"kubernetes": {"fuse": "yes"}},
            "kubernetes.fuse",
            "expected one of 'device', 'privileged', got 'yes'",
        ),
        (
            {"autostop": 5},
            "autostop",
            "expected a mapping with keys grace_minutes, default_idle_minutes, got 5",
        ),
    ],
)
def test_invalid_values_are_rejected_with_what_was_expected(
    user_home: Path, layer: dict[str, Any], key_path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(user_home, env={}, overrides=[("client request", layer)])
    assert str(err.value) == f"client request: {key_path}: {message}"


def test_a_bad_layer_is_reported_even_when_a_higher_layer_sets_the_same_key(
    user_home: Path,
) -> None:
    # Layers are checked one by one, so a later fix-up does not hide the broken file.
    write_yaml(user_home / "config.yaml", grace(-5))
    with pytest.raises(ConfigError, match=r"^~/\.stix/config\.yaml: autostop\.grace_minutes"):
        load_config(user_home, env={"STIX__AUTOSTOP__GRACE_MINUTES": "1"})


def test_invalid_environment_variable_is_named_in_the_error(user_home: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(user_home, env={"STIX__AUTOSTOP__GRACE_MINUTES": "soon"})
    assert str(err.value) == (
        "environment variable STIX__AUTOSTOP__GRACE_MINUTES: autostop.grace_minutes: "
        "expected a number >= 0 and <= 31536000, got 'soon'"
    )


def test_malformed_environment_variable_name_says_how_to_write_it(user_home: Path) -> None:
    with pytest.raises(ConfigError, match="write it as STIX__SECTION__KEY"):
        load_config(user_home, env={"STIX__AUTOSTOP____GRACE_MINUTES": "1"})


def test_yaml_syntax_error_gives_file_line_and_column(user_home: Path) -> None:
    (user_home / "config.yaml").write_text(
        "autostop:\n  grace_minutes: 5\n  default_idle_minutes: [1, 2\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError) as err:
        load_config(user_home, env={})
    assert str(err.value).startswith("~/.stix/config.yaml: invalid YAML at line 4, column 1: ")
    assert err.value.key_path is None


def test_yaml_syntax_error_points_at_the_offending_line(user_home: Path, project: Path) -> None:
    (project / ".stix.yaml").write_text(
        "local:\n  max_nodes: 4\n bad: indentation\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"^\.stix\.yaml: invalid YAML at line 3, column 2: "):
        load_config(user_home, cwd=project, env={})


def test_a_file_that_is_not_a_mapping_is_rejected(user_home: Path) -> None:
    (user_home / "config.yaml").write_text("- local\n- aws\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^~/\.stix/config\.yaml: expected a mapping with keys"):
        load_config(user_home, env={})


def test_explicit_config_file_that_does_not_exist_is_an_error(
    user_home: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(user_home, env={}, extra_files=[missing])
    assert err.value.source == str(missing)
    assert str(err.value) == (
        f"{missing}: config file given with --config does not exist; check the path"
    )


def test_explicit_config_file_errors_name_it_as_given(user_home: Path, tmp_path: Path) -> None:
    bad = write_yaml(tmp_path / "ci.yaml", {"daemon": {"log_levl": "debug"}})
    with pytest.raises(ConfigError) as err:
        load_config(user_home, env={}, extra_files=[bad])
    assert str(err.value) == f"{bad}: daemon.log_levl: unknown key (did you mean 'log_level'?)"


def test_config_to_dict_gives_plain_data_that_round_trips(user_home: Path) -> None:
    write_yaml(user_home / "config.yaml", {"allowed_clouds": ["local"]})
    cfg = load_config(user_home, env={})
    as_dict = config_to_dict(cfg)
    assert as_dict["allowed_clouds"] == ["local"]
    assert as_dict["daemon"]["restart_intensity"] == {"max_restarts": 5, "within_seconds": 60}
    assert msgspec.convert(json.loads(json.dumps(as_dict)), Config) == cfg
