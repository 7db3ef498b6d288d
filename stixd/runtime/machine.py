"""States are enums and transitions are data: one table per actor kind."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Generic, TypeVar

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


class TransitionError(Exception):
    """A (state, event) pair that is not in the table: a bug, never a user error."""


class Machine(Generic[S, E]):
    def __init__(self, name: str, table: Mapping[tuple[S, E], S]) -> None:
        self.name = name
        self.table = dict(table)

    def next(self, state: S, event: E) -> S:
        try:
            return self.table[(state, event)]
        except KeyError:
            raise TransitionError(
                f"{self.name}: event {event.name} is not allowed in state {state.name}"
            ) from None

    def allows(self, state: S, event: E) -> bool:
        return (state, event) in self.table
