"""Errors the handlers raise on purpose. The Lambda ``errorType`` is the class name; the two the
state machine retries by name, ``Throttled`` and ``TransientError``, are defined with the other
shared names in core/contracts.py (core/asl.py reads their names there)."""

from __future__ import annotations

from botocore.exceptions import ClientError, ConnectionError, EndpointConnectionError

from core.contracts import Throttled, TransientError

THROTTLING_CODES = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "SlowDown",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
}
TRANSIENT_CODES = {
    "InternalServerException",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "RequestTimeout",
}


class NoValidInstances(Exception):
    """Validation quarantined every instance of the batch: nothing to import (not retried)."""


class ManifestError(Exception):
    """The manifest is missing or unreadable (not retried)."""


def classify(exc: BaseException) -> BaseException:
    """Map a botocore error to Throttled / TransientError when retrying can help; else return it."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in THROTTLING_CODES:
            return Throttled(f"{code}: {exc}")
        if (
            code in TRANSIENT_CODES
            or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
        ):
            return TransientError(f"{code}: {exc}")
    if isinstance(exc, (ConnectionError, EndpointConnectionError)):
        return TransientError(str(exc))
    return exc
