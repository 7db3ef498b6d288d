"""The range of every number a user or a client gives stix, said once.

A number that enters (a flag, a YAML field, a wire field) is finite and inside its range, or
it is refused at the edge with one sentence: `inf` minutes of autostop or a job id past what
SQLite stores would otherwise be written to the store and break what reads it back. The wire
types carry these ranges as msgspec constraints (decoding enforces them); the task rules and
the daemon's config use the same constants.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

MAX_ID = 2**53 - 1
"""Job and managed-job ids: exact in JSON, SQLite and any JSON reader."""
MAX_IDLE_MINUTES = 525_600
"""Autostop idle time: a year. Longer is `stixctl autostop --cancel`."""
MAX_COUNT = 10_000
"""Nodes of a cluster, accelerators of a node, jobs submitted at once, replicas, workers."""
MAX_REPLICAS = 1_000
"""Replicas of one service: `replicas`, `min_replicas`, and `max_replicas` plus
`num_overprovision` (the most the autoscaler keeps). Each replica is a cluster of its own; a
thousand is past any service SkyServe's examples run, and a typo of `max_replicas: 1000000`
must not become a million launches."""
MAX_LINES = 1_000_000_000
"""Log lines to show (`--tail`)."""
MAX_EVENTS = 1_000_000
"""History entries to show (`events --limit`)."""
MAX_LISTED = 1_000_000_000
"""Rows a listing shows (`jobs queue --limit`): more than any store holds."""
MAX_DAYS = 36_500
"""`cost-report --days`: a century."""
MAX_SECONDS = 31_536_000
"""Delays, timeouts and intervals: a year."""
MAX_CPUS = 100_000
MAX_GB = 10_000_000
"""Memory, disk and data sizes in GB (about 10 PB)."""
MAX_PRICE = 1_000_000
"""Dollars per hour."""
MAX_RESTARTS = 1_000_000
MAX_QPS = 1_000_000_000
"""Requests per second (a service's autoscaling target)."""
MAX_PROTOCOL = 2**31 - 1
MAX_YAML_CHARS = 4_000_000
"""Characters of a YAML file stix reads (`stixproto.user_yaml.MAX_CHARS`), and so bytes of a task
file a client sends the daemon to read (`stixproto.messages.ReadTask`)."""
MAX_PATH = 4096
"""Characters of a local path a client sends (PATH_MAX on Linux)."""
MAX_CHOICE = 1024
"""A plan's choice as `launch` shows it (`2x aws/p4d.24xlarge (us-east-1, spot)`)."""

JobId = Annotated[int, Meta(ge=1, le=MAX_ID)]
IdleMinutes = Annotated[float, Meta(ge=0, le=MAX_IDLE_MINUTES)]
NodeRank = Annotated[int, Meta(ge=0, le=MAX_COUNT - 1)]
Lines = Annotated[int, Meta(ge=0, le=MAX_LINES)]
EventLimit = Annotated[int, Meta(ge=1, le=MAX_EVENTS)]
ListLimit = Annotated[int, Meta(ge=1, le=MAX_LISTED)]
Days = Annotated[int, Meta(ge=1, le=MAX_DAYS)]
JobCount = Annotated[int, Meta(ge=1, le=MAX_COUNT)]
PreemptCount = Annotated[int, Meta(ge=0, le=MAX_COUNT)]
AcceleratorCount = Annotated[float, Meta(gt=0, le=MAX_COUNT)]
Protocol = Annotated[int, Meta(ge=0, le=MAX_PROTOCOL)]
LocalPath = Annotated[str, Meta(min_length=1, max_length=MAX_PATH)]
PlanChoice = Annotated[str, Meta(min_length=1, max_length=MAX_CHOICE)]
YamlBytes = Annotated[bytes, Meta(max_length=MAX_YAML_CHARS + 1)]
