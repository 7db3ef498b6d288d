"""Workdir and file-mount syncs leave out what `.skyignore` / `.gitignore` exclude, the same
way on every infra: the rules against real git, the local copy, rsync, and a local launch."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from stixd.providers.shared import ssh_sync
from stixd.providers.shared.filesync import sync_path
from stixd.providers.shared.ssh_sync import rsync_filters
from stixd.providers.shared.syncfilter import RsyncPlan, SyncFilter, rsync_exclude_list, rsync_plan
from tests.conftest import Stix

TREE = [
    "a.py",
    "debug.log",
    "keep.log",
    "build/out.bin",
    "src/build/gen.py",
    "src/main.py",
    "src/cache.tmp",
    "src/deep/x.tmp",
    "src/deep/ok.tmp",
    "docs/a/b/notes.md",
    "docs/readme.md",
    "data/raw/big.bin",
    "data/raw/small.csv",
    "logs/1.txt",
    "logs/important.txt",
    "name[1].txt",
    "file2.txt",
    "fileA.txt",
    "#hash.txt",
    "!bang.txt",
    "sp ace.txt",
    "top.only",
    "sub/top.only",
    "q/r/triple.txt",
]
GITIGNORE = r"""
# comment
*.log
!keep.log
/build/
*.tmp
docs/**/notes.md
data/raw/*.bin
logs/
!logs/important.txt
name\[1\].txt
file[0-9].txt
\#hash.txt
\!bang.txt
sp\ ace.txt
/top.only
outputs/
***/triple.txt
//sub
"""
NESTED = {"src/.gitignore": "!ok.tmp\nmain.py\n", "src/deep/.gitignore": "!x.tmp\n"}


def make_tree(root: Path, ignore_files: dict[str, str]) -> Path:
    for rel in TREE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel + "\n")
    for rel, text in ignore_files.items():
        (root / rel).write_text(text)
    return root


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def sent_by_rules(root: Path) -> set[str]:
    rules = SyncFilter(root)
    return {rel for rel in files(root) if not rules.excludes(rel, is_dir=False)}


@pytest.mark.skipif(shutil.which("git") is None, reason="git compares the rules")
def test_gitignore_rules_exclude_exactly_what_git_ignores(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "repo", {".gitignore": GITIGNORE, **NESTED})
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".git" / "info" / "exclude").write_text("a.py\n")
    ignored = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--others", "--ignored", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    git_kept = files(root) - set(ignored.split("\0")) - {""}
    git_kept = {f for f in git_kept if not f.startswith(".git/")}
    ours = {f for f in sent_by_rules(root) if not f.startswith(".git/")}
    assert ours == git_kept
    # the cases that matter most, spelled out
    assert {"keep.log", "src/build/gen.py", "src/deep/x.tmp", "sub/top.only"} <= ours
    assert not {"a.py", "debug.log", "build/out.bin", "src/main.py", "logs/important.txt"} & ours
    assert not {"name[1].txt", "file2.txt", "#hash.txt", "!bang.txt", "sp ace.txt"} & ours
    assert {"fileA.txt", "docs/readme.md", "data/raw/small.csv"} <= ours
    assert "q/r/triple.txt" not in ours  # three stars as a whole part are git's '**'


def test_a_skyignore_replaces_every_gitignore(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "w",
        {
            ".gitignore": GITIGNORE,
            **NESTED,
            ".skyignore": "data/\n*.md\n",
            "src/.skyignore": "main.py\n",
        },
    )
    sent = sent_by_rules(root)
    assert not any(f.startswith("data/") or f.endswith(".md") for f in sent)
    assert "src/main.py" not in sent  # a nested .skyignore counts too
    assert {"debug.log", "build/out.bin", "src/cache.tmp", ".gitignore"} <= sent


def test_no_ignore_file_sends_everything(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "w", {})
    assert sent_by_rules(root) == files(root)


def test_local_copy_leaves_out_what_is_excluded_and_keeps_it_at_the_destination(
    tmp_path: Path,
) -> None:
    src = make_tree(tmp_path / "src", {".gitignore": GITIGNORE, **NESTED})
    dst = tmp_path / "dst"
    sync_path(src, dst)
    assert files(dst) == sent_by_rules(src)
    (dst / "logs").mkdir(exist_ok=True)
    (dst / "logs" / "run.txt").write_text("a job's output in an ignored folder\n")
    (dst / "outputs").mkdir()
    (dst / "outputs" / "model.bin").write_text("an ignored folder the source lacks\n")
    (dst / "stray.py").write_text("gone from the source\n")
    (src / "src" / "main.py").write_text("now sent\n")  # no longer ignored below:
    (src / "src" / ".gitignore").write_text("!ok.tmp\n")
    assert sync_path(src, dst) == 2  # src/main.py and src/.gitignore
    assert (dst / "logs" / "run.txt").exists()  # excluded: left alone, as rsync does
    assert (dst / "outputs" / "model.bin").exists()
    assert not (dst / "stray.py").exists()
    assert (dst / "src" / "main.py").read_text() == "now sent\n"


@pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")
def test_rsync_sends_exactly_what_the_local_copy_sends(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {".gitignore": GITIGNORE, **NESTED})
    (src / "odd*[x].log").write_text("a name rsync would read as a pattern\n")
    (src / "back\\slash.tmp").write_text("x\n")
    (src / "line\nbreak.log").write_text("x\n")
    exclude = tmp_path / "exclude"
    exclude.write_bytes(rsync_exclude_list(src))
    dst = tmp_path / "rsynced"
    argv = ["rsync", "-a", "--delete-after", *rsync_filters(src, exclude), f"{src}/", f"{dst}/"]
    subprocess.run(argv, check=True)
    local = tmp_path / "copied"
    sync_path(src, local)
    assert files(dst) == files(local) == sent_by_rules(src)
    assert not {"odd*[x].log", "back\\slash.tmp", "line\nbreak.log"} & files(dst)
    for copy in (dst, local):
        (copy / "outputs").mkdir()
        (copy / "outputs" / "model.bin").write_text("an ignored folder the source lacks\n")
        (copy / "stray.py").write_text("gone from the source\n")
    subprocess.run(argv, check=True)
    sync_path(src, local)
    assert files(dst) == files(local) == sent_by_rules(src) | {"outputs/model.bin"}


@pytest.mark.anyio
async def test_nodes_syncing_one_tree_at_once_share_one_walk_and_the_next_sync_walks_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path / "src", {".gitignore": GITIGNORE, **NESTED})
    walked: list[Path] = []

    def counted(root: Path) -> RsyncPlan:
        walked.append(root)
        return rsync_plan(root)

    monkeypatch.setattr(ssh_sync, "rsync_plan", counted)
    walks = ssh_sync.Walks()
    plans: list[RsyncPlan] = []

    async def node() -> None:
        plans.append(await walks.plan(src))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(node)
    assert walked == [src]
    assert plans == [rsync_plan(src)] * 3
    assert plans[0].exclude == rsync_exclude_list(src)
    assert set(plans[0].ignore_files) == {".gitignore", *NESTED}
    (src / ".gitignore").write_text(GITIGNORE + "a.py\n")
    later = await walks.plan(src)
    assert walked == [src, src] and b"/a.py\n" in later.exclude


def test_a_local_launch_syncs_the_workdir_through_the_filter(
    stix: Stix, tmp_path: Path, task_file: Callable[[str], Path]
) -> None:
    work = make_tree(tmp_path / "work", {".gitignore": "*.log\nbuild/\n"})
    mounted = make_tree(tmp_path / "mounted", {".skyignore": "docs/\n"})
    task = task_file(
        f"workdir: {work}\n"
        f"file_mounts:\n  ~/mounted: {mounted}\n"
        "run: |\n"
        "  find . -type f | sort | sed 's/^/W /'\n"
        "  (cd ~/mounted && find . -type f | sort | sed 's/^/M /')\n"
    )
    out = stix.run("launch", "-c", "ign", "-y", str(task), check=True).stdout
    arrived_work = {line[4:] for line in out.splitlines() if line.startswith("W ./")}
    arrived_mount = {line[4:] for line in out.splitlines() if line.startswith("M ./")}
    assert arrived_work == sent_by_rules(work)
    assert "debug.log" not in arrived_work and "build/out.bin" not in arrived_work
    assert "a.py" in arrived_work
    assert arrived_mount == sent_by_rules(mounted)
    assert "docs/readme.md" not in arrived_mount and "debug.log" in arrived_mount


@pytest.mark.skipif(shutil.which("git") is None, reason="git compares the rules")
def test_random_rules_and_nested_negations_agree_with_git(tmp_path: Path) -> None:
    rng = random.Random(13)
    parts = ["a", "b", "ab", "a.log", "b.txt", "x", "dir"]
    tokens = ["a", "b", "*", "?", "**", "/", ".log", "[ab]", "[!a]", "x", "dir", "!", "***"]

    def pattern() -> str:
        text = "".join(rng.choice(tokens) for _ in range(rng.randint(1, 4)))
        return ("!" if rng.random() < 0.3 else "") + text + ("/" if rng.random() < 0.2 else "")

    for trial in range(30):
        root = tmp_path / f"r{trial}"
        for _ in range(12):
            rel = "/".join(rng.choice(parts) + str(i) for i in range(rng.randint(1, 3)))
            try:
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                if not (root / rel).is_dir():
                    (root / rel).write_text("x")
            except (FileExistsError, NotADirectoryError):
                continue  # a file where this path wants a directory
        (root / ".gitignore").write_text("\n".join(pattern() for _ in range(3)) + "\n")
        nested = rng.choice([d for d in root.rglob("*") if d.is_dir()] or [root])
        (nested / ".gitignore").write_text(f"{pattern()}\n{pattern()}\n")
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "-o", "-i", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout.decode()
        ignored_by_git = {f for f in listed.split("\0") if f and not f.endswith(".gitignore")}
        candidates = {
            f for f in files(root) if not f.startswith(".git/") and not f.endswith(".gitignore")
        }
        rules = SyncFilter(root)
        ours = {f for f in candidates if rules.excludes(f, is_dir=False)}
        assert ours == ignored_by_git, (root / ".gitignore").read_text()
