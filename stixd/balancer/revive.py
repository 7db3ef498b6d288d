"""Knocking on ejected replicas while requests wait because every replica is out of rotation.

An ejection is for a backoff that grows to a minute; a replica restarted meanwhile (stopped and
started again on its port) should take the waiting requests as soon as it accepts connections,
not when its backoff ends. So while any request waits and every replica is out, each that
was out for refusing connections is connected to every `KNOCK_SECONDS`; one that accepts is
back in rotation (`Pool.revived`), and the waiting requests are woken (as they are when a
backoff runs out). One that accepted and reset is not knocked on: accepting proves nothing of
it, and it waits out its backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from stixd.balancer.control import Held
from stixd.balancer.pool import Pool

KNOCK_SECONDS = 0.2
KNOCK_TIMEOUT = 1.0


async def accepts(url: str) -> bool:
    """Whether the replica at ``url`` accepts a TCP connection within `KNOCK_TIMEOUT`."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        async with asyncio.timeout(KNOCK_TIMEOUT):
            _, writer = await asyncio.open_connection(parts.hostname, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@dataclass
class Reviver:
    pool: Pool
    held: Held
    period: float = KNOCK_SECONDS

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            await self.held.demand()  # at once while a request waits
            out = [s for s in self.pool.out_of_rotation() if s.refused]
            if out:
                answers = await asyncio.gather(*(accepts(s.replica.url) for s in out))
                for slot, ok in zip(out, answers, strict=True):
                    if ok:
                        self.pool.revived(slot)
            if self.pool.slots and not self.pool.out_of_rotation():
                self.pool.wake()  # a backoff ran out meanwhile: the waiting requests try it
            await asyncio.sleep(self.period)
