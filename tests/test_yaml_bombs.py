"""YAML a user wrote is read in time linear in its size: alias bombs, deep nesting, huge scalars
and long numbers are refused with one line that names the limit, wherever stix reads YAML."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stixd.config import ConfigError, load_config
from stixd.providers.ssh.pools import PoolError, load_pools
from stixproto import user_yaml
from stixproto.errors import InvalidTask
from stixproto.task import Task, from_yaml, load_task_file
from stixproto.user_yaml import MAX_CHARS, MAX_DEPTH, MAX_VALUES, YamlError
from tests.conftest import REPO, Stix
from tests.shared_data import needs

EXPANDED = "YAML too large: with its aliases expanded it holds more than"
TOO_MANY_VALUES = f"{EXPANDED} {MAX_VALUES:,} values (the limit)"
TOO_MANY_CHARS = f"{EXPANDED} {MAX_CHARS:,} characters (the limit)"
TOO_DEEP = f"YAML nested too deeply: more than {MAX_DEPTH} levels of lists and maps (the limit)"

SHARED = Path(os.environ.get("STIX_SHARED") or REPO.parent / "shared")
CORPUS = sorted((SHARED / "compat" / "skypilot-yamls").glob("*.y*ml"))


def laughs(levels: int = 9, width: int = 9) -> str:
    """The billion laughs as the issue saw it: each level a list of aliases to the one below."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def map_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["m0: &m0 {" + ", ".join(f"k{j}: lol" for j in range(width)) + "}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{" + ", ".join(f"k{j}: *m{i - 1}" for j in range(width)) + "}")
    return "\n".join(lines) + "\n"


def merge_laughs(levels: int = 9, width: int = 9) -> str:
    """Merge keys repeat a map's pairs in every map that merges it, before any dict is built."""
    lines = ["m0: &m0 {" + ", ".join(f"k{j}: lol" for j in range(width)) + "}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * width)}]}}")
    return "\n".join(lines) + "\n"


def block_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["l0: &l0", *["  - lol"] * width]
    for i in range(1, levels):
        lines += [f"l{i}: &l{i}", *[f"  - *l{i - 1}"] * width]
    return "\n".join(lines) + "\n"


def flat_bomb(values: int) -> str:
    """A list of aliases to one list of 99 scalars, padded to exactly `values` values."""
    lists, extra = divmod(values - 1, 100)
    items = ["- &a [" + ", ".join(["x"] * 99) + "]"] + ["- *a"] * (lists - 1)
    return "\n".join(items + ["- x"] * extra) + "\n"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    try:
        return fn(), time.perf_counter() - start
    except Exception as exc:
        return exc, time.perf_counter() - start


BIG = "x" * 100_000
REFUSED = {
    "aliases in lists": (laughs(), TOO_MANY_VALUES),
    "aliases in maps": (map_laughs(), TOO_MANY_VALUES),
    "merge keys": (merge_laughs(), TOO_MANY_VALUES),
    "aliases in block lists": (block_laughs(), TOO_MANY_VALUES),
    "one over the limit": (flat_bomb(MAX_VALUES + 1), TOO_MANY_VALUES),
    "a bomb in a second document": ("name: a\n---\n" + laughs(), TOO_MANY_VALUES),
    "a big scalar aliased": (f"a: &a {BIG}\nb: [{', '.join(['*a'] * 50)}]\n", TOO_MANY_CHARS),
    "10,000 [": ("[" * 10_000 + "]" * 10_000, TOO_DEEP),
    "a megabyte of [": ("[" * 1_000_000, TOO_DEEP),
    "10,000 {a: ": ("{a: " * 10_000 + "}" * 10_000, TOO_DEEP),
    "100,000 compact - ": ("- " * 100_000 + "x\n", TOO_DEEP),
    "1,000 indented keys": ("".join(" " * i + f"k{i}:\n" for i in range(1_000)), TOO_DEEP),
    "65 levels": ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), TOO_DEEP),
    "an alias that brings depth": (
        f"a: &a {'[' * 60}{']' * 60}\nb: [[[[[[*a]]]]]]\n",
        TOO_DEEP,
    ),
    "a list that holds itself": ("a: &a [1, *a]\n", TOO_DEEP),
    "a map that holds itself": ("a: &a {b: *a}\n", TOO_DEEP),
    "a plain text past the limit": (
        "a: " + "x" * MAX_CHARS + "\n",
        f"YAML too large: more than {MAX_CHARS:,} characters (the limit)",
    ),
    "a base-60 number": (
        "a: 1" + ":1" * 40_000 + "\n",
        "YAML number at line 1, column 4 is 80,001",
    ),
    "5,000 digits": ("a: " + "1" * 5_000 + "\n", "YAML number at line 1, column 4 is 5,000"),
    "a hex number": ("a: 0x" + "f" * 5_000 + "\n", "characters long, more than 128 (the limit)"),
    "month 13": (
        "a: 2001-13-45\n",
        "YAML syntax error at line 1, column 4: month must be in 1..12",
    ),
    "a control character": ("a: b\x00\n", "YAML syntax error: character #x0000 at position 4"),
    "!!int on nothing": ("a: !!int\n", "YAML syntax error at line 1, column 4: not a valid int"),
    "!!bool on a word": ("a: !!bool maybe\n", "at line 1, column 4: not a valid bool"),
    "!!timestamp on a word": ("a: !!timestamp soon\n", "column 4: not a valid timestamp"),
    "a lone surrogate": ("a: \udcff\n", "YAML syntax error: character #xdcff at position 3"),
}


AT_ONCE = 10.0
"""Seconds a refusal may take on a busy machine: a bomb expanded takes minutes or all memory;
how fast a refusal is, bench/bench_yaml_bomb.py measures."""


@pytest.mark.parametrize("name", REFUSED)
def test_each_kind_of_bomb_is_refused_at_once_with_one_line_naming_the_limit(name: str) -> None:
    text, expected = REFUSED[name]
    error, seconds = timed(lambda: user_yaml.load_all(text))
    assert isinstance(error, YamlError), error
    assert expected in str(error) and "\n" not in str(error)
    assert seconds < AT_ONCE, f"{name}: {seconds:.2f} s"
    task_error, seconds = timed(lambda: from_yaml(text, "bomb.yaml"))
    assert isinstance(task_error, InvalidTask), task_error
    assert task_error.message == f"bomb.yaml: {error}"
    assert seconds < AT_ONCE, f"{name} as a task: {seconds:.2f} s"


def test_a_file_at_the_limit_reads_and_one_value_more_does_not() -> None:
    at_limit = user_yaml.load(flat_bomb(MAX_VALUES))
    assert len(at_limit) == (MAX_VALUES - 1) // 100 + (MAX_VALUES - 1) % 100
    with pytest.raises(YamlError, match="more than 100,000 values"):
        user_yaml.load(flat_bomb(MAX_VALUES + 1))
    deepest: list[Any] = []
    for _ in range(MAX_DEPTH - 1):
        deepest = [deepest]
    assert user_yaml.load("[" * MAX_DEPTH + "]" * MAX_DEPTH) == deepest


def test_documents_share_one_budget() -> None:
    half = flat_bomb(MAX_VALUES // 2 + 1)
    assert len(user_yaml.load_all(half)) == 1
    with pytest.raises(YamlError, match="more than 100,000 values"):
        user_yaml.load_all(half + "---\n" + half)


def test_a_file_is_read_no_further_than_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * MAX_CHARS + "\n")
    with pytest.raises(InvalidTask, match=r"big.yaml: YAML too large: more than 4,000,000 bytes"):
        load_task_file(big)
    with pytest.raises(YamlError, match="more than 4,000,000 bytes"):
        user_yaml.read_file("/dev/zero")


# -- through the real client ------------------------------------------------------------------


def test_the_billion_laughs_of_the_issue_is_refused_by_validate_in_well_under_a_second(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    bomb = task_file(laughs())
    assert len(bomb.read_bytes()) < 1024
    plain = task_file("name: ok\nrun: echo hi\n")
    _, floor = timed(lambda: stix.run("validate", str(plain)))
    proc, seconds = timed(lambda: stix.run("validate", str(bomb)))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"✗ {bomb}: {TOO_MANY_VALUES}"]
    assert seconds - floor < 1.0, f"{seconds:.2f} s against {floor:.2f} s for a plain file"


def test_launch_refuses_bombs_in_tasks_and_config_files_and_the_daemon_lives_on(
    stix: Stix, task_file: Callable[[str], Path]
) -> None:
    """The daemon reads a launch's task file (`ReadTask`), so a bomb reaches it: it refuses it
    in the same sentence and keeps serving; config files are still read by the client."""
    bomb = task_file(laughs())
    plain = task_file("run: echo hi\n")
    for args, source in (
        (["launch", "-y", "-c", "c1", str(bomb)], bomb),
        (["launch", "-y", "-c", "c1", "--config", str(bomb), str(plain)], bomb),
    ):
        proc = stix.run(*args, timeout=30)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.splitlines() == [f"stixctl: {source}: {TOO_MANY_VALUES}"]
    (stix.home / ".stix.yaml").write_text("[" * 100_000)
    proc = stix.run("launch", "-y", "-c", "c1", str(plain), timeout=30)
    assert proc.stderr.splitlines() == [f"stixctl: .stix.yaml: {TOO_DEEP}"]
    (stix.home / ".stix.yaml").unlink()
    proc = stix.run("launch", "-y", "-c", "c1", "--config", "/dev/zero", str(plain), timeout=30)
    assert "/dev/zero: YAML too large: more than 4,000,000 bytes (the limit)" in proc.stderr
    pid = stix.daemon_pid()
    assert pid is not None and stix.run("status").returncode == 0
    assert stix.daemon_pid() == pid


# -- the daemon's own files ---------------------------------------------------------------------


def test_the_daemon_config_layers_refuse_bombs_with_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text(laughs())
    with pytest.raises(ConfigError) as err:
        load_config(home, env={})
    assert str(err.value).endswith(f"config.yaml: {TOO_MANY_VALUES}")
    (home / "config.yaml").unlink()
    flow_bomb = "[" + ", ".join(["&a [" + ", ".join(["x"] * 99) + "]"] + ["*a"] * 1_500) + "]"
    with pytest.raises(ConfigError) as err:
        load_config(home, env={"STIX__AUTOSTOP__GRACE_MINUTES": flow_bomb})
    assert str(err.value) == (
        "environment variable STIX__AUTOSTOP__GRACE_MINUTES: autostop.grace_minutes: "
        + TOO_MANY_VALUES
    )


def test_ssh_node_pools_refuse_bombs_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "ssh_node_pools.yaml").write_text(map_laughs())
    with pytest.raises(PoolError) as err:
        load_pools(tmp_path)
    assert str(err.value) == f"ssh_node_pools.yaml: {TOO_MANY_VALUES}"


# -- every loader reads what PyYAML reads ----------------------------------------------------


@pytest.fixture(params=["libyaml", "pure Python"])
def loaders(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both builds of PyYAML: with libyaml (C) and without it."""
    if request.param == "pure Python":
        monkeypatch.setattr(yaml, "__with_libyaml__", False)
    user_yaml._loader_classes.cache_clear()
    yield request.param
    monkeypatch.undo()
    user_yaml._loader_classes.cache_clear()


# Comment lines put before a text send it down the other paths: more brackets than libyaml is
# trusted with (composed in Python), and what may be an anchor (every node measured).
GUARDED = "# " + "[" * 300 + "\n"
MEASURED = "# &x\n"


@needs(SHARED / "compat" / "skypilot-yamls", "compat corpus")
def test_every_path_reads_the_corpus_as_pyyaml_does(loaders: str) -> None:
    for path in CORPUS:
        text = path.read_text()
        expected = list(yaml.safe_load_all(text))
        for variant in (text, MEASURED + text, GUARDED + text, MEASURED + GUARDED + text):
            assert user_yaml.load_all(variant) == expected, (loaders, path.name)


@pytest.mark.parametrize(
    "name",
    [
        "aliases in lists",
        "merge keys",
        "10,000 [",
        "a hex number",
        "!!bool on a word",
        "a control character",
        "a lone surrogate",
    ],
)
def test_every_path_refuses_bombs_alike(loaders: str, name: str) -> None:
    text, expected = REFUSED[name]
    for variant in (text, text + GUARDED):  # after the text, to keep lines and positions
        with pytest.raises(YamlError) as err:
            user_yaml.load_all(variant)
        assert expected in str(err.value), (loaders, name)


def _nested(depth: int, shapes: list[str]) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        kind = shapes[level % len(shapes)]
        value = [value, level] if kind == "list" else {f"k{level}": value, "n": level}
    return value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    depth=st.integers(min_value=0, max_value=MAX_DEPTH + 8),
    shapes=st.lists(st.sampled_from(["list", "map"]), min_size=1, max_size=4),
    flow=st.sampled_from([None, True, False]),
    indent=st.integers(min_value=2, max_value=9),
    width=st.sampled_from([20, 80, 10_000]),
)
def test_nesting_is_refused_exactly_past_the_limit_however_it_is_written(
    depth: int, shapes: list[str], flow: bool | None, indent: int, width: int
) -> None:
    """The depth bound that lets most files skip measuring must never let a deep file through."""
    data = _nested(depth, shapes)
    text = yaml.safe_dump(data, default_flow_style=flow, indent=indent, width=width)
    if depth <= MAX_DEPTH:
        assert user_yaml.load(text) == data
    else:
        with pytest.raises(YamlError, match="nested too deeply"):
            user_yaml.load(text)


# -- walks of the loaded task --------------------------------------------------------------------


def test_env_substitution_is_bounded_however_often_a_variable_is_used() -> None:
    """`$X` is 2 characters; a million of them with a megabyte value would build a terabyte."""
    uses = '"' + "$X" * 1_000_000 + '"'
    expected = (
        "file_mounts: substituting envs would make the task more than 4,000,000 characters "
        "longer (the limit)"
    )
    big_env = f"envs:\n  X: {'x' * 1_000_000}\nfile_mounts:\n  /a: {uses}\n"
    error, seconds = timed(lambda: from_yaml(big_env, "subst.yaml"))
    assert isinstance(error, InvalidTask) and error.message == f"subst.yaml: {expected}"
    assert seconds < AT_ONCE
    given_later = f"envs:\n  X: null\nfile_mounts:\n  /a: {uses}\n"
    error, seconds = timed(
        lambda: from_yaml(given_later, "subst.yaml", env_overrides={"X": "x" * 1_000_000})
    )
    assert isinstance(error, InvalidTask) and error.message == f"subst.yaml: {expected}"
    assert seconds < AT_ONCE
    small = f"envs:\n  X: {'x' * 1_000}\nfile_mounts:\n  /a: {'$X' * 1_000}\n"
    task = from_yaml(small, "subst.yaml")
    assert isinstance(task, Task) and task.file_mounts == {"/a": "x" * 1_000_000}
