"""The ``aws:`` section of the config file."""

from __future__ import annotations

from typing import Annotated

import msgspec

from stixproto.bounds import MAX_SECONDS

PositiveMinutes = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]
Minutes = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]


class AwsConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    vpc_name: str | None = None
    ssh_user: Annotated[str, msgspec.Meta(min_length=1)] = "ubuntu"
    leak_check_minutes: PositiveMinutes = 10.0
    leak_min_age_minutes: Minutes = 10.0
    terminate_leaks: bool = False
