"""`stixctl validate` on YAML alias bombs, as whole-process wall time.

The bomb at the refusal limit is the largest a file may expand to: with every alias written out
it holds exactly `MAX_VALUES` values, under `config:` of an otherwise valid task, so everything
validate does walks all of them. One value more is refused by the loader. Also timed: the
billion laughs of issue 12 (341 bytes, 387 million values unrefused) and a megabyte of `[`.
Baseline: `sys.executable -c pass` of the same venv, in the same run; a plain one-line task is
shown for reference. Target: the bomb at the limit well under one second.

    python -m bench.bench_yaml_bomb [--runs 10]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path
from typing import Any

import yaml

from bench.common import FLOOR, FLOOR_CMD, median, ms, stix_home, wall
from stixproto.user_yaml import MAX_VALUES

PLAIN = "name: plain\nrun: echo hi\n"


def expanded_values(text: str) -> int:
    """Values of `text` with every alias written out, as the loader counts them."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if isinstance(node, yaml.ScalarNode):
            return 1
        if id(node) not in sizes:
            pairs = isinstance(node, yaml.MappingNode)
            children = [n for pair in node.value for n in pair] if pairs else node.value
            sizes[id(node)] = 1 + sum(size(child) for child in children)
        return sizes[id(node)]

    return sum(size(doc) for doc in yaml.compose_all(text, Loader=yaml.SafeLoader))


def bomb_at(values: int, width: int = 10) -> str:
    """A valid task whose `config:` is a billion laughs grown to exactly `values` values:
    levels of `width` aliases to the level below, then, to fill up, aliases to the largest
    levels that still fit and at most `width` plain scalars."""
    sizes = [1 + width]  # values of level i with its aliases written out
    while 1 + width * sizes[-1] <= values // 2:
        sizes.append(1 + width * sizes[-1])

    def text(fill: list[str]) -> str:
        lines = ["run: echo hi", "config:", f"  l0: &l0 [{', '.join(['lol'] * width)}]"]
        for i in range(1, len(sizes)):
            lines.append(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
        lines.append(f"  fill: [{', '.join(fill)}]")
        return "\n".join(lines) + "\n"

    left = values - expanded_values(text([]))
    fill: list[str] = []
    for i in reversed(range(len(sizes))):
        count, left = divmod(left, sizes[i])
        fill += [f"*l{i}"] * count
    result = text(fill + ["x"] * left)
    assert expanded_values(result) == values
    return result


def laughs() -> str:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def timed(cmd: list[str], env: dict[str, str] | None, runs: int) -> tuple[float, float]:
    """Median wall and CPU (user + system) seconds of `cmd` as a whole process; the CPU figure
    is the steadier on a shared machine."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        walls.append(wall(cmd, env, check=False))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return median(walls), median(cpus)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    at_limit = bomb_at(MAX_VALUES)
    cases = [
        ("plain one-line task (reference)", PLAIN, 0),
        (f"bomb at the limit ({MAX_VALUES:,} values, valid)", at_limit, 0),
        ("one value past the limit (refused)", at_limit.replace("fill: [", "fill: [x, "), 2),
        ("issue 12's billion laughs (refused)", laughs(), 2),
        ("a megabyte of '[' (refused)", "[" * 1_000_000, 2),
    ]
    with stix_home() as home, tempfile.TemporaryDirectory() as tmp:
        rows = []
        for i, (label, text, code) in enumerate(cases):
            path = Path(tmp) / f"case{i}.yaml"
            path.write_text(text)
            got = home.ctl("validate", str(path), check=False)
            if got.returncode != code:
                raise SystemExit(f"{label}: exit {got.returncode}, expected {code}: {got.stderr}")
            cmd = home.ctl_cmd("validate", str(path))
            rows.append((label, len(text.encode()), *timed(cmd, home.env, args.runs), got.stderr))
        base_wall, base_cpu = timed(FLOOR_CMD, None, args.runs)
    print(
        f"floor {FLOOR}: {ms(base_wall)} wall, {ms(base_cpu)} CPU "
        f"(medians of {args.runs}); target: the bomb at the limit well under 1 s"
    )
    for label, size, wall_s, cpu_s, said in rows:
        print(
            f"{label:45s} {size:>9,} B  wall {ms(wall_s):>9s} {wall_s / base_wall:5.2f}x"
            f"  CPU {ms(cpu_s):>9s} {cpu_s / base_cpu:5.2f}x"
        )
        if said.strip():
            print(f"    {said.strip().split(': ', 1)[1]}")


if __name__ == "__main__":
    main()
