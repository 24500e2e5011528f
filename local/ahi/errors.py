"""Service errors, raised anywhere in the emulator and rendered by the HTTP layer.

The HTTP status of each code comes from botocore's service model (see ``ApiModel.error_status``),
so only the code and the message live here.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error response: ``x-amzn-ErrorType: <code>`` and ``{"message": ...}``."""

    code = "InternalServerException"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class ValidationError(ApiError):
    code = "ValidationException"


class NotFoundError(ApiError):
    code = "ResourceNotFoundException"


class ConflictError(ApiError):
    code = "ConflictException"


class ThrottledError(ApiError):
    code = "ThrottlingException"
