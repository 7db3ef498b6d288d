"""`stixctl ssh up|down|status [POOL]`: SSH node pools, probed host by host."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from stixd.actors import quarantine
from stixd.actors.specs import ClusterData, ClusterSpec, data_of, spec_of, state_of
from stixd.app import App
from stixd.providers.base import NodeInfo
from stixd.providers.ssh.provider import HostReport, SshProvider
from stixproto import messages as m
from stixproto import names
from stixproto.errors import ClusterNotFound, ClusterNotUp, InvalidRequest
from stixproto.states import ClusterStatus

Emit = Callable[[Any], Awaitable[None]]


async def node_shell(app: App, req: m.NodeShell) -> m.ShellCommand:
    row = await app.store.get("cluster", req.cluster)
    if row is None or row.terminal:
        raise ClusterNotFound(f"cluster {req.cluster!r} does not exist")
    if row.quarantined is not None:
        raise quarantine.refusal(row, row.quarantined)
    if state_of(row, ClusterStatus) is not ClusterStatus.UP:
        raise ClusterNotUp(
            f"cluster {req.cluster!r} is {row.state}; "
            f"start it with `{names.command('start', req.cluster)}`"
        )
    nodes = [NodeInfo.from_dict(n) for n in data_of(row, ClusterData).nodes]
    by_rank = {n.rank: n for n in nodes}
    if req.node not in by_rank:
        raise InvalidRequest(
            f"cluster {req.cluster!r} has nodes 0..{len(nodes) - 1}; there is no node {req.node}"
        )
    provider: Any = app.provider(spec_of(row, ClusterSpec).provider)
    argv, cwd, env = provider.shell_command(by_rank[req.node], req.command)
    return m.ShellCommand(argv=argv, cwd=cwd, env=env)


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024**3:.0f} GiB"


async def ssh_pools_cmd(
    app: App, req: m.SshPools, emit: Emit, down: Callable[[str], Awaitable[Any]]
) -> m.Table:
    sizes = app.ssh_pool_sizes()  # re-reads ssh_node_pools.yaml if it changed
    provider = app.provider("ssh")
    assert isinstance(provider, SshProvider)
    if not sizes:
        raise InvalidRequest(f"no SSH node pools: write them in {app.home / 'ssh_node_pools.yaml'}")
    if req.pool is not None and req.pool not in sizes:
        raise InvalidRequest(f"no ssh pool '{req.pool}' (pools: {', '.join(sorted(sizes))})")
    names = [req.pool] if req.pool else sorted(sizes)
    holders = {
        host.host: cluster
        for cluster, holding in provider.allocations.read().items()
        for host in holding.hosts
    }
    if req.action == "down":
        clusters = sorted({c for c, h in provider.allocations.read().items() if h.pool in names})
        for cluster in clusters:
            await emit(m.Progress(f"Terminating {cluster} (holds hosts of {', '.join(names)})..."))
            await down(cluster)
        holders = {}
    rows: list[dict[str, Any]] = []
    lines: list[str] = []
    for name in names:
        reports: list[HostReport] = await provider.probe_pool(name)
        keys = [h.key for h in provider.pools[name].hosts]
        ready = sum(r.ok for r in reports)
        lines.append(f"Pool {name}: {ready}/{len(reports)} host(s) ready")
        for key, r in zip(keys, reports, strict=True):
            held = holders.get(key)
            state = "ok" if r.ok else f"error: {r.error or 'no python3'}"
            lines.append(
                f"  {r.host:20s} {state:40s} python {r.python or '-':8s} "
                f"free {_gib(r.free_bytes):>8s}  {('used by ' + held) if held else 'free'}"
            )
            rows.append(
                {
                    "pool": name,
                    "host": r.host,
                    "ok": r.ok,
                    "reachable": r.reachable,
                    "python": r.python,
                    "free_bytes": r.free_bytes,
                    "agents": list(r.agents),
                    "cluster": held,
                    "error": r.error,
                }
            )
    # only `up` is a readiness check; status and down report hosts without judging them
    ok = req.action != "up" or all(row["ok"] for row in rows)
    return m.Table(text="\n".join(lines), rows=rows, ok=ok)
