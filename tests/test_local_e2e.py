"""End to end on the local infra: real daemon, real agents, real jobs, through stixctl."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

from tests.conftest import Stix, pid_alive, wait_until

HELLO = """
name: hello
setup: |
  echo "setup on rank $SKYPILOT_SETUP_NODE_RANK"
run: |
  echo "run rank=$SKYPILOT_NODE_RANK nodes=$SKYPILOT_NUM_NODES gpus=$SKYPILOT_NUM_GPUS_PER_NODE"
  echo "twin rank=$STIX_NODE_RANK"
  echo "task=$SKYPILOT_TASK_ID"
  echo "info=$SKYPILOT_CLUSTER_INFO"
  echo "greeting=$GREETING"
envs:
  GREETING: hi
"""


def test_launch_runs_setup_and_run_and_follows_the_log(stix: Stix, task_file) -> None:
    proc = stix.run("launch", "-c", "demo", "-y", str(task_file(HELLO)), check=True)
    assert "setup on rank 0" in proc.stdout
    assert "run rank=0 nodes=1 gpus=0" in proc.stdout
    assert "twin rank=0" in proc.stdout
    assert "greeting=hi" in proc.stdout
    assert "_demo_1" in proc.stdout  # SKYPILOT_TASK_ID: sky-<time>_<cluster>_<job id>
    info = json.loads(proc.stdout.split("info=")[1].splitlines()[0])
    assert info["cluster_name"] == "demo" and info["cloud"] == "local"
    assert "SUCCEEDED" in proc.stderr
    cluster = stix.clusters()["demo"]
    assert cluster["status"] == "UP" and cluster["num_nodes"] == 1
    assert stix.jobs("demo")[1]["status"] == "SUCCEEDED"
    assert len(stix.agents("demo")) == 1


def test_env_override_and_required_env(stix: Stix, task_file) -> None:
    path = task_file("run: echo value=$NEEDED\nenvs:\n  NEEDED: null\n")
    refused = stix.run("launch", "-c", "envs", str(path))
    assert refused.returncode == 2
    assert "envs.NEEDED" in refused.stderr and "--env NEEDED" in refused.stderr
    assert "envs" not in stix.clusters()
    ok = stix.run("launch", "-c", "envs", "--env", "NEEDED=42", str(path), check=True)
    assert "value=42" in ok.stdout


def test_failing_job_makes_launch_exit_nonzero(stix: Stix) -> None:
    proc = stix.run("launch", "-c", "bad", "echo before; exit 3")
    assert proc.returncode == 100, proc.stderr
    assert "before" in proc.stdout
    job = stix.jobs("bad")[1]
    assert job["status"] == "FAILED" and job["exit_code"] == 3
    status = stix.run("logs", "bad", "1", "--status")
    assert status.returncode == 100 and "FAILED" in status.stdout


def test_failing_setup_is_failed_setup(stix: Stix, task_file) -> None:
    proc = stix.run("launch", "-c", "bad", str(task_file("setup: exit 4\nrun: echo never\n")))
    assert proc.returncode == 100
    assert "never" not in proc.stdout
    assert stix.jobs("bad")[1]["status"] == "FAILED_SETUP"


def test_exec_with_file_and_command_and_logs_no_follow(stix: Stix, task_file) -> None:
    stix.run("launch", "-c", "c1", "-y", "echo first", check=True)
    by_file = stix.run("exec", "c1", str(task_file("setup: echo nosetup\nrun: echo from-file\n")))
    assert by_file.returncode == 0 and "from-file" in by_file.stdout
    assert "nosetup" not in by_file.stdout  # exec skips setup
    by_cmd = stix.run("exec", "c1", "echo from-command", check=True)
    assert "from-command" in by_cmd.stdout
    jobs = stix.jobs("c1")
    assert sorted(jobs) == [1, 2, 3] and all(j["status"] == "SUCCEEDED" for j in jobs.values())
    logs = stix.run("logs", "c1", "3", "--no-follow", check=True)
    assert logs.stdout.strip() == "from-command"
    tail = stix.run("exec", "c1", "-d", "for i in 1 2 3 4 5; do echo line$i; done", check=True)
    assert "runs detached" in tail.stderr
    wait_until(lambda: stix.job_status("c1", 4) == "SUCCEEDED")
    last2 = stix.run("logs", "c1", "4", "--no-follow", "--tail", "2", check=True)
    assert last2.stdout.split() == ["line4", "line5"]


def test_exec_on_missing_or_stopped_cluster_is_a_clear_error(stix: Stix) -> None:
    missing = stix.run("exec", "nope", "echo x")
    assert missing.returncode == 3 and "does not exist" in missing.stderr
    stix.run("launch", "-c", "s", "-y", "true", check=True)
    stix.run("stop", "s", "-y", check=True)
    stopped = stix.run("exec", "s", "echo x")
    assert (
        stopped.returncode == 4
        and "STOPPED" in stopped.stderr
        and "stixctl start s" in stopped.stderr
    )


def test_num_nodes_starts_one_agent_per_rank(stix: Stix, task_file) -> None:
    path = task_file(
        'num_nodes: 3\nrun: |\n  echo "rank=$SKYPILOT_NODE_RANK ips=$(echo $SKYPILOT_NODE_IPS)"\n'
    )
    proc = stix.run("launch", "-c", "multi", "-y", str(path), check=True)
    ips = proc.stdout.split("rank=0 ips=")[1].splitlines()[0]
    # one address per node: its own namespace's, or this machine's where nodes share it
    assert len(ips.split()) == 3 and len(set(ips.split())) in (1, 3)
    for rank in range(3):
        assert f"rank={rank} ips={ips}" in proc.stdout
    assert "(worker2, rank=2)" in proc.stdout
    assert len(stix.agents("multi")) == 3
    one = stix.run("logs", "multi", "1", "--node", "2", "--no-follow", check=True).stdout
    assert one.strip() == f"(worker2, rank=2) rank=2 ips={ips}"
    bad = stix.run("logs", "multi", "1", "--node", "7", "--no-follow")
    assert bad.returncode == 2 and "there is no node 7" in bad.stderr
    assert stix.clusters()["multi"]["num_nodes"] == 3
    # re-launch on the UP cluster reuses it: no new agents
    stix.run("launch", "-c", "multi", "-y", str(path), check=True)
    assert len(stix.agents("multi")) == 3


def test_one_failed_rank_fails_the_gang_and_stops_the_others(stix: Stix, task_file) -> None:
    path = task_file(
        "num_nodes: 2\nrun: |\n  if [ $SKYPILOT_NODE_RANK = 1 ]; then exit 7; fi\n  sleep 60\n"
    )
    proc = stix.run("launch", "-c", "gang", "-y", str(path), timeout=40)
    assert proc.returncode == 100
    job = stix.jobs("gang")[1]
    assert job["status"] == "FAILED" and job["exit_code"] == 7


def test_workdir_and_file_mounts_resync_only_changed_files(
    stix: Stix, tmp_path: Path, task_file
) -> None:
    work = tmp_path / "work"
    (work / "pkg").mkdir(parents=True)
    (work / "a.txt").write_text("alpha")
    (work / "pkg" / "b.txt").write_text("beta")
    data = tmp_path / "data.txt"
    data.write_text("mounted")
    path = task_file(
        f"workdir: {work}\nfile_mounts:\n  ~/inputs/data.txt: {data}\n"
        "run: cat a.txt pkg/b.txt ~/inputs/data.txt\n"
    )
    first = stix.run("launch", "-c", "sync", "-y", str(path), check=True)
    assert "alphabetamounted" in first.stdout.replace("\n", "")
    assert (stix.node_dir("sync") / "sky_workdir" / "pkg" / "b.txt").read_text() == "beta"
    assert "3 file(s) changed" in first.stderr
    time.sleep(0.01)
    (work / "a.txt").write_text("ALPHA")
    (work / "pkg" / "b.txt").unlink()
    second = stix.run("launch", "-c", "sync", "-y", str(path))
    assert "1 file(s) changed" in second.stderr, second.stderr
    assert not (stix.node_dir("sync") / "sky_workdir" / "pkg" / "b.txt").exists()
    assert (stix.node_dir("sync") / "sky_workdir" / "a.txt").read_text() == "ALPHA"


def test_missing_workdir_is_refused_before_anything_is_made(stix: Stix, task_file) -> None:
    proc = stix.run("launch", "-c", "w", str(task_file("workdir: /no/such/dir\nrun: echo ok\n")))
    assert proc.returncode == 2 and "workdir" in proc.stderr and "/no/such/dir" in proc.stderr
    assert "w" not in stix.clusters()


def test_cancel_kills_the_whole_process_tree(stix: Stix) -> None:
    stix.run("launch", "-c", "cc", "-y", "true", check=True)
    script = "sleep 1000 & echo $! > ~/grandchild.pid; bash -c 'sleep 1000' & wait"
    stix.run("exec", "cc", "-d", script, check=True)
    pid_file = stix.node_dir("cc") / "grandchild.pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip())
    grandchild = int(pid_file.read_text())
    wait_until(lambda: stix.job_status("cc", 2) == "RUNNING")
    assert pid_alive(grandchild)
    proc = stix.run("cancel", "cc", "2", "-y", check=True)
    assert "2" in proc.stdout
    wait_until(lambda: not pid_alive(grandchild), timeout=10)
    wait_until(lambda: stix.job_status("cc", 2) == "CANCELLED")


def test_cancel_all_and_unknown_job(stix: Stix) -> None:
    stix.run("launch", "-c", "ca", "-y", "true", check=True)
    for _ in range(3):
        stix.run("exec", "ca", "-d", "sleep 1000", check=True)
    wait_until(lambda: all(j["status"] == "RUNNING" for i, j in stix.jobs("ca").items() if i > 1))
    stix.run("cancel", "ca", "--all", "-y", check=True)
    wait_until(lambda: all(j["status"] == "CANCELLED" for i, j in stix.jobs("ca").items() if i > 1))
    unknown = stix.run("cancel", "ca", "99")
    assert unknown.returncode == 3 and "no job 99" in unknown.stderr


def test_stop_start_down(stix: Stix) -> None:
    stix.run("launch", "-c", "life", "-y", "true", check=True)
    stix.run("stop", "life", "-y", check=True)
    assert stix.clusters()["life"]["status"] == "STOPPED"
    wait_until(lambda: not stix.agents("life"))
    stix.run("start", "life", "-y", check=True)
    assert stix.clusters()["life"]["status"] == "UP"
    assert len(stix.agents("life")) == 1
    assert "ok" in stix.run("exec", "life", "echo ok", check=True).stdout
    stix.run("down", "life", "-y", check=True)
    assert "life" not in stix.clusters()
    assert stix.json("status", "--all")[0]["status"] == "TERMINATED"
    assert not stix.node_dir("life").exists()
    wait_until(lambda: not stix.agents("life"))
    # the name can be used again; job ids start over for the new cluster
    stix.run("launch", "-c", "life", "-y", "echo again", check=True)
    assert list(stix.jobs("life")) == [1]


def test_events_show_the_cluster_history(stix: Stix) -> None:
    stix.run("launch", "-c", "ev", "-y", "true", check=True)
    stix.run("stop", "ev", "-y", check=True)
    events = stix.json("events", "ev")
    changes = [(e["event"], e["to_state"]) for e in events if e["id"] == "ev"]
    assert ("launch", "INIT") in changes and ("provisioned", "UP") in changes
    assert ("stopped", "STOPPED") in changes
    assert any(e["id"].startswith("ev/") and e["to_state"] == "SUCCEEDED" for e in events)
    table = stix.run("events", "ev", check=True).stdout
    assert "INIT -> UP" in table


def test_status_answers_from_the_store_and_refresh_sees_reality(stix: Stix) -> None:
    stix.env["STIX__DAEMON__HEALTH_CHECK_SECONDS"] = "3600"  # only --refresh may look
    stix.run("launch", "-c", "r", "-y", "true", check=True)
    for pid in stix.agents("r"):
        os.kill(pid, 9)
    wait_until(lambda: not stix.agents("r"))
    assert stix.clusters()["r"]["status"] == "UP"  # the store's view, no infra calls
    refreshed = {c["name"]: c for c in stix.json("status", "--refresh")}
    assert refreshed["r"]["status"] == "STOPPED"


def test_check_and_cost_report(stix: Stix) -> None:
    checks = {c["infra"]: c for c in stix.json("check")}
    assert checks["local"]["enabled"] and not checks["aws"]["enabled"]
    stix.run("launch", "-c", "cost", "-y", "true", check=True)
    report = stix.json("cost-report")
    assert report["rows"][0]["name"] == "cost" and report["total"] == 0.0
    bad = stix.run("check", "nosuchcloud")
    assert bad.returncode == 2 and "unknown infra" in bad.stderr


def test_bad_task_files_get_one_clear_sentence(stix: Stix, task_file) -> None:
    typo = stix.run("launch", "-c", "t", str(task_file("resoures:\n  cpus: 2\nrun: echo ok\n")))
    assert typo.returncode == 2
    assert "resoures: unknown key (did you mean 'resources'?)" in typo.stderr
    syntax = stix.run("launch", "-c", "t", str(task_file("run: [unclosed\n")))
    assert syntax.returncode == 2 and "line" in syntax.stderr and "column" in syntax.stderr
    cloud = stix.run(
        "launch", "-c", "t", str(task_file("resources:\n  infra: aws\nrun: echo ok\n"))
    )
    assert cloud.returncode == 2 and "'aws' is not available" in cloud.stderr
    gpus = stix.run("launch", "-c", "t", str(task_file("resources:\n  accelerators: A100:8\n")))
    assert gpus.returncode == 2 and "no accelerators" in gpus.stderr
    assert "Traceback" not in typo.stderr + syntax.stderr + cloud.stderr + gpus.stderr
    assert "t" not in stix.clusters()


def test_daemon_commands(stix: Stix) -> None:
    start = stix.run("daemon", "start", check=True)
    assert "running" in start.stdout
    info = stix.json("daemon", "status")
    assert info["pid"] == stix.daemon_pid()
    assert oct(os.stat(stix.home / "stixd.sock").st_mode & 0o777) == "0o600"
    logs = stix.run("daemon", "logs", "--tail", "5", check=True)
    assert '"ready"' in logs.stdout
    stix.run("daemon", "stop", check=True)
    assert stix.daemon_pid() is None
    assert stix.run("daemon", "status").returncode == 1
    unit = stix.run("daemon", "install", "--print", check=True)
    assert "ExecStart=" in unit.stdout and "--foreground" in unit.stdout


def test_two_clients_at_once(stix: Stix) -> None:
    stix.run("launch", "-c", "two", "-y", "true", check=True)
    a = stix.popen("exec", "two", "sleep 0.5; echo from-a")
    b = stix.popen("exec", "two", "sleep 0.5; echo from-b")
    out_a, _ = a.communicate(timeout=30)
    out_b, _ = b.communicate(timeout=30)
    assert a.returncode == 0 and b.returncode == 0
    assert "from-a" in out_a and "from-b" in out_b
    assert sorted(stix.jobs("two")) == [1, 2, 3]


def test_many_concurrent_submissions_each_run_exactly_once(stix: Stix) -> None:
    stix.run("launch", "-c", "burst", "-y", "true", check=True)
    procs = [stix.popen("exec", "burst", "-d", f"echo {i} >> ~/ran.txt") for i in range(30)]
    for p in procs:
        p.communicate(timeout=60)
        assert p.returncode == 0
    wait_until(
        lambda: sum(1 for j in stix.jobs("burst").values() if j["status"] == "SUCCEEDED") == 31
    )
    ran = (stix.node_dir("burst") / "ran.txt").read_text().split()
    assert sorted(map(int, ran)) == list(range(30))
    assert sorted(stix.jobs("burst")) == list(range(1, 32))


def test_launch_json_reports_the_job(stix: Stix) -> None:
    out = stix.run("launch", "-c", "js", "-y", "--json", textwrap.dedent("echo x"), check=True)
    reply = json.loads(out.stdout.strip().splitlines()[-1])
    assert reply["cluster"] == "js" and reply["job_id"] == 1 and reply["job_status"] == "SUCCEEDED"


def test_project_config_file_applies_and_a_bad_key_names_the_file(
    stix: Stix, tmp_path: Path
) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / ".stix.yaml").write_text("autostop:\n  default_idle_minutes: 30\n")
    stix.run("launch", "-c", "cfg", "-y", "true", cwd=project, check=True)
    assert stix.clusters()["cfg"]["autostop_idle_minutes"] == 30
    extra = tmp_path / "extra.yaml"
    extra.write_text("autostop:\n  grace_minuts: 3\n")
    bad = stix.run("launch", "-c", "cfg2", "--config", str(extra), "-y", "true", cwd=project)
    assert bad.returncode == 2
    assert "extra.yaml: autostop.grace_minuts: unknown key (did you mean 'grace_minutes'?)" in (
        bad.stderr
    )
    assert "cfg2" not in stix.clusters()


def test_launch_down_alone_tears_down_once_the_job_is_done(stix: Stix) -> None:
    stix.run("launch", "-c", "once", "-y", "--down", "echo bye", check=True)
    wait_until(lambda: "once" not in stix.clusters(), timeout=30)
    assert not stix.node_dir("once").exists()


def test_the_readme_examples_run(stix: Stix) -> None:
    from tests.conftest import REPO

    hello = stix.run("launch", "-c", "ex", "-y", "examples/hello.yaml", cwd=REPO, check=True)
    assert "hello from stix, node rank 0 of 1" in hello.stdout
    train = stix.run(
        "launch", "-c", "ex", "-y", "examples/train.yaml", "--env", "STEPS=2", cwd=REPO, check=True
    )
    assert "step 2/2" in train.stdout and "done with lr=0.001" in train.stdout
    multi = stix.run("launch", "-c", "exm", "-y", "examples/multinode.yaml", cwd=REPO, check=True)
    assert "(worker2, rank=2) rank 2 of 3" in multi.stdout


def test_secrets_reach_the_job_but_no_log_event_or_listing(stix: Stix, task_file) -> None:
    secret = "s3cr3t-value-7781"
    path = task_file("secrets:\n  TOKEN: " + secret + '\nrun: |\n  echo "token length ${#TOKEN}"\n')
    out = stix.run("launch", "-c", "sec", "-y", str(path), check=True)
    assert f"token length {len(secret)}" in out.stdout
    shown = "".join(
        [
            out.stderr,
            stix.run("status", "--json", check=True).stdout,
            stix.run("queue", "sec", "--json", check=True).stdout,
            stix.run("events", "sec", "--json", check=True).stdout,
            (stix.home / "stixd.log").read_text(),
        ]
    )
    assert secret not in shown


def test_a_gang_runs_only_after_every_node_has_set_up(stix: Stix, task_file, tmp_path) -> None:
    order = tmp_path / "order.txt"
    path = task_file(
        "num_nodes: 3\n"
        "setup: |\n"
        "  if [ $SKYPILOT_SETUP_NODE_RANK = 2 ]; then sleep 1.5; fi\n"
        f"  echo setup-done-$SKYPILOT_SETUP_NODE_RANK >> {order}\n"
        "run: |\n"
        f"  echo run-$SKYPILOT_NODE_RANK >> {order}\n"
    )
    stix.run("launch", "-c", "gang2", "-y", str(path), check=True, timeout=60)
    lines = order.read_text().split()
    assert sorted(lines) == sorted(
        [f"setup-done-{r}" for r in range(3)] + [f"run-{r}" for r in range(3)]
    )
    last_setup = max(i for i, line in enumerate(lines) if line.startswith("setup-done"))
    first_run = min(i for i, line in enumerate(lines) if line.startswith("run"))
    assert last_setup < first_run, lines  # rank 2's slow setup held every rank's run back


def test_a_setup_failure_on_one_node_stops_the_gang_before_run(
    stix: Stix, task_file, tmp_path
) -> None:
    ran = tmp_path / "ran.txt"
    path = task_file(
        "num_nodes: 3\n"
        "setup: |\n"
        "  if [ $SKYPILOT_SETUP_NODE_RANK = 1 ]; then exit 9; fi\n"
        f"run: echo run-$SKYPILOT_NODE_RANK >> {ran}\n"
    )
    proc = stix.run("launch", "-c", "gang3", "-y", str(path), timeout=60)
    assert proc.returncode == 100
    job = stix.jobs("gang3")[1]
    assert job["status"] == "FAILED_SETUP" and job["exit_code"] == 9
    assert not ran.exists()  # no node started `run`
    assert len(stix.agents("gang3")) == 3  # the nodes stay up for the next job


def test_ssh_into_a_local_node_runs_in_its_sandbox(stix: Stix) -> None:
    stix.run("launch", "-c", "sh", "-y", "--num-nodes", "2", "true", check=True)
    out = stix.run("ssh", "sh", "--node", "1", "echo $HOME; pwd", check=True).stdout.split()
    assert out == [str(stix.node_dir("sh", 1)), str(stix.node_dir("sh", 1) / "sky_workdir")]
    none = stix.run("ssh", "sh", "--node", "5", "true")
    assert none.returncode == 2 and "there is no node 5" in none.stderr
    stix.run("stop", "sh", "-y", check=True)
    stopped = stix.run("ssh", "sh", "true")
    assert stopped.returncode == 4 and "stixctl start sh" in stopped.stderr
