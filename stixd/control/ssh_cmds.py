"""`stixctl ssh up|down|status [POOL]`: SSH node pools, probed host by host."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from stixd.actors import quarantine
from stixd.actors.specs import ClusterData, ClusterSpec, data_of, spec_of, state_of
from stixd.app import App
from stixd.providers.abilities import HasPools, HasShell, HostReport
from stixd.providers.base import NodeInfo
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
    infra = spec_of(row, ClusterSpec).provider
    provider = app.provider(infra)
    if not isinstance(provider, HasShell):
        raise InvalidRequest(
            f"cluster {req.cluster!r} runs on {infra}, whose nodes have no shell to log in to; "
            f"use `{names.command('logs', req.cluster)}` to see what its jobs print"
        )
    argv, cwd, env = provider.shell_command(by_rank[req.node], req.command)
    return m.ShellCommand(argv=argv, cwd=cwd, env=env)


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024**3:.0f} GiB"


async def ssh_pools_cmd(
    app: App, req: m.SshPools, emit: Emit, down: Callable[[str], Awaitable[Any]]
) -> m.Table:
    provider = app.providers.get(app.infras.pools() or "")
    if not isinstance(provider, HasPools):
        raise InvalidRequest("this daemon has no provider with node pools")
    sizes = provider.pool_sizes()  # re-reads ssh_node_pools.yaml if it changed
    if not sizes:
        raise InvalidRequest(f"no SSH node pools: write them in {app.home / 'ssh_node_pools.yaml'}")
    if req.pool is not None and req.pool not in sizes:
        raise InvalidRequest(f"no ssh pool '{req.pool}' (pools: {', '.join(sorted(sizes))})")
    names = [req.pool] if req.pool else sorted(sizes)
    holdings = provider.holdings()
    holders = {host: cluster for cluster, holding in holdings.items() for host in holding.hosts}
    if req.action == "down":
        clusters = sorted({c for c, h in holdings.items() if h.pool in names})
        for cluster in clusters:
            await emit(m.Progress(f"Terminating {cluster} (holds hosts of {', '.join(names)})..."))
            await down(cluster)
        holders = {}
    rows: list[dict[str, Any]] = []
    lines: list[str] = []
    for name in names:
        reports: list[HostReport] = await provider.probe_pool(name)
        ready = sum(r.ok for r in reports)
        lines.append(f"Pool {name}: {ready}/{len(reports)} host(s) ready")
        for r in reports:
            held = holders.get(r.host)
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
