"""`stixctl fake preempt CLUSTER... | --count N`: for tests and benchmarks only.

Makes nodes of the daemon's `fake` provider vanish, as a spot preemption does. The daemon
refuses it unless that provider is enabled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stixctl.output import print_table
from stixproto import messages as m


def _preempt(home: Path, a: argparse.Namespace) -> int:
    from stixctl.client import call

    reply: m.Table = call(home, m.FakePreempt(clusters=a.clusters, count=a.count))
    return print_table(reply, a.json)


def add_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("action", choices=["preempt"])
    s.add_argument("clusters", nargs="*", metavar="CLUSTER")
    s.add_argument("--count", type=int, default=0, help="preempt N running fake clusters")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_preempt)
