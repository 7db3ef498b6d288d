"""A machine reached over SSH, as a pool file or a cloud names it: address, login and route."""

from __future__ import annotations

import msgspec

from stixd.providers.shared.ssh_transport import SshTarget


class JumpHost(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int = 22
    user: str

    def __str__(self) -> str:
        port = "" if self.port == 22 else f":{self.port}"
        return f"{self.user}@{self.host}{port}"


class PoolHost(msgspec.Struct, frozen=True, kw_only=True):
    ip: str
    port: int
    user: str
    identity_file: str | None = None
    password: str | None = None
    jump: JumpHost | None = None
    proxy_command: str | None = None

    @property
    def key(self) -> str:
        """The host's identity in allocations: one machine is taken by one cluster at a time.

        Behind a bastion an address names a machine only together with the route to it."""
        via = self.jump or self.proxy_command
        return f"{self.ip}:{self.port}" + (f" via {via}" if via else "")

    def target(self, known_hosts: str | None = None) -> SshTarget:
        jump = None
        if self.jump is not None:
            jump = SshTarget(
                host=self.jump.host,
                port=self.jump.port,
                user=self.jump.user,
                identity_file=self.identity_file,
                password=self.password,
                known_hosts=known_hosts,
            )
        return SshTarget(
            host=self.ip,
            port=self.port,
            user=self.user,
            identity_file=self.identity_file,
            password=self.password,
            known_hosts=known_hosts,
            jump=jump,
            proxy_command=self.proxy_command,
        )

    def __repr__(self) -> str:  # the password never reaches a log line
        return f"PoolHost({self.user}@{self.key})"
