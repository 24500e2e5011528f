"""Errors the handlers raise on purpose. The Lambda ``errorType`` is the class name, and the
state machine (core/asl.py) retries or catches by that name: keep them in step."""

from __future__ import annotations

from botocore.exceptions import ClientError, ConnectionError, EndpointConnectionError

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


class Throttled(Exception):
    """An AWS API said slow down: retried by the state machine with exponential backoff and jitter."""


class TransientError(Exception):
    """A 5xx or a dropped connection: retried by the state machine."""


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
