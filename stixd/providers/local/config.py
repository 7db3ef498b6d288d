"""The ``local:`` section of the config file."""

from __future__ import annotations

from typing import Annotated

import msgspec

from stixproto.bounds import MAX_COUNT


class LocalConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    max_nodes: Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNT)] = 16
