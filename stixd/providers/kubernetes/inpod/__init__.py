"""Programs stix runs in a pod on the pod's own python3 (3.7 or newer, standard library only):
the relay to the agent's socket and the tree sync's lister and unpacker.

They are not installed in the pod: each exec runs ``python3 -c LOADER``, which reads one line
with a byte count and then exactly that many bytes of program source from stdin, and runs it;
the rest of stdin is the program's own input. The relay has to work before the agent's zipapp
is in the pod (bootstrap asks the agent's socket for ``hello`` first), so it cannot live in it.
"""

from __future__ import annotations

import functools
from pathlib import Path

LOADER = (
    "import sys;b=sys.stdin.buffer;n=int(b.readline());"
    "exec(compile(b.read(n),'<stix-inpod>','exec'))"
)


def argv(name: str, *args: str) -> list[str]:
    """The exec's command for the program ``name``: the loader, then the name (so ``ps`` in the
    pod tells the programs apart) and ``args``, the program's ``sys.argv[1:]`` and
    ``sys.argv[2:]``."""
    return ["python3", "-c", LOADER, name, *args]


@functools.cache
def preamble(name: str) -> bytes:
    """What to send first on the exec's stdin to run the program ``name`` (a module here)."""
    source = (Path(__file__).parent / f"{name}.py").read_bytes()
    return b"%d\n" % len(source) + source
