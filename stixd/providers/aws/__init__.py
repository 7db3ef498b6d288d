"""The AWS provider: EC2 through aiobotocore, nodes reached and bootstrapped over SSH."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stixd.providers.aws.provider import AwsProvider

__all__ = ["AwsProvider"]


def __getattr__(name: str) -> object:
    # Loaded on first use: the registry reads this folder's entry (and the config its section)
    # without importing aiobotocore, which costs about a second.
    if name == "AwsProvider":
        from stixd.providers.aws.provider import AwsProvider

        return AwsProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
