"""The AWS provider: EC2 through aiobotocore, nodes reached and bootstrapped over SSH."""

from stixd.providers.aws.provider import AwsProvider

__all__ = ["AwsProvider"]
