"""EC2 errors as stix errors that carry their next step: retry, or block what they name.

What to block follows what the error is about: a zone out of capacity blocks that zone (for
that instance type and market), a quota blocks the region, an unknown instance type blocks the
type everywhere, refused credentials block the whole cloud. Throttling and AWS's own 5xx
(other than capacity, which EC2 also sends as a 5xx) are worth retrying as they are.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from stixd.providers.base import Block, CapacityError
from stixproto.errors import ProvisionError

if TYPE_CHECKING:  # botocore is loaded by the clients whose failures are classified here
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]
    from botocore.parsers import ResponseParserError  # type: ignore[import-untyped]

ZONE_CAPACITY = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientFreeAddressesInSubnet",
        "Unsupported",
        "SpotMaxPriceTooLow",
        "InsufficientSpotCapacity",
    }
)
REGION_QUOTA = frozenset(
    {
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "MaxSpotInstanceCountExceeded",
        "SpotInstanceLimitExceeded",
        "InsufficientAddressCapacity",
        "AddressLimitExceeded",
        "OptInRequired",
    }
)
TYPE_UNKNOWN = frozenset({"InvalidInstanceType"})
AUTH = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "RequestExpired",
        "Blocked",
        "AccessDenied",
    }
)
TRANSIENT = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestTimeout",
    }
)


@dataclasses.dataclass(frozen=True)
class Where:
    """What a call was about, so an error can name what to block."""

    region: str
    zone: str | None = None
    instance_type: str | None = None
    use_spot: bool | None = None

    def block(self, scope: str) -> Block:
        """What to block for an error about this call: its ``zone``, its ``region``, its
        instance ``type`` everywhere, or (any other scope) the whole cloud."""
        return Block(
            infra="aws",
            region=self.region if scope in ("zone", "region") else None,
            zone=self.zone if scope == "zone" else None,
            instance_type=self.instance_type if scope in ("zone", "region", "type") else None,
            use_spot=self.use_spot if scope in ("zone", "region") else None,
        )


QUOTA_MEMORY_S = 1800.0
"""How long a quota error keeps its region out of new plans (quotas rarely change sooner)."""


class AwsCapacityError(CapacityError):
    """No capacity or no quota for this choice: block ``block`` and try the next choice.

    The block remembers a quota for ``QUOTA_MEMORY_S`` (capacity comes back; quotas rarely do).
    """

    retryable = False

    def __init__(self, code: str, message: str, block: Block) -> None:
        remember_s = QUOTA_MEMORY_S if code in REGION_QUOTA else 0.0
        super().__init__(message, dataclasses.replace(block, reason=code, remember_s=remember_s))
        self.aws_code = code


class AwsAuthError(ProvisionError):
    """AWS refused the credentials (or this operation): the whole cloud is blocked."""

    retryable = False

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.aws_code = code
        self.block = Block(infra="aws", reason=code)


class AwsTransientError(ProvisionError):
    """Throttled, or AWS had a passing problem: the same call may work a little later."""

    retryable = True

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.aws_code = code


class AwsRequestError(ProvisionError):
    """AWS refused the request itself (a bad image, a bad parameter): retrying won't help."""

    retryable = False

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.aws_code = code


def error_code(exc: ClientError) -> str:
    err: dict[str, Any] = exc.response.get("Error", {})
    return str(err.get("Code") or "Unknown")


def classify(
    exc: ClientError | BotoCoreError | ResponseParserError, operation: str, where: Where
) -> ProvisionError:
    """The stix error for a failed EC2 call, naming the call and what it was about."""
    from botocore.exceptions import BotoCoreError
    from botocore.parsers import ResponseParserError

    if isinstance(exc, BotoCoreError):  # no answer at all: endpoint down, DNS, timeout
        return AwsTransientError(
            type(exc).__name__, f"AWS {operation} in {where.region} got no answer: {exc}"
        )
    if isinstance(exc, ResponseParserError):  # an answer that is no AWS response (a proxy's
        # or an overloaded endpoint's HTML error page): worth another try, as a 5xx is
        return AwsTransientError(
            "ResponseParserError",
            f"AWS {operation} in {where.region} answered with something that is not an AWS "
            f"response: {str(exc).splitlines()[0][:200]}",
        )
    code = error_code(exc)
    text = str(exc.response.get("Error", {}).get("Message") or code)
    about = f"{where.instance_type} " if where.instance_type else ""
    place = where.zone or where.region
    if code in ZONE_CAPACITY:
        message = f"AWS has no {about}capacity in {place} ({code}: {text})"
        return AwsCapacityError(code, message, where.block("zone"))
    if code in REGION_QUOTA:
        message = f"AWS quota reached for {about}in {where.region} ({code}: {text})"
        return AwsCapacityError(code, message, where.block("region"))
    if code in TYPE_UNKNOWN or (
        code == "InvalidParameterValue" and "instance type" in text.lower()
    ):
        message = f"AWS does not offer {about.strip() or 'this instance type'} ({code}: {text})"
        return AwsCapacityError(code, message, where.block("type"))
    if code in AUTH:
        return AwsAuthError(code, f"AWS refused {operation} in {where.region}: {code}: {text}")
    if code in TRANSIENT:
        return AwsTransientError(code, f"AWS {operation} in {where.region}: {code}: {text}")
    return AwsRequestError(code, f"AWS {operation} in {where.region} failed: {code}: {text}")


def aws_code(exc: ProvisionError) -> str:
    """EC2's code of an AWS error (``InvalidGroup.Duplicate``); empty for any other error."""
    if isinstance(exc, AwsCapacityError | AwsAuthError | AwsTransientError | AwsRequestError):
        return exc.aws_code
    return ""
