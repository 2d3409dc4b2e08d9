"""The domain error tree. Each error carries its HTTP status; one handler maps them."""

from __future__ import annotations


class ModelplaneError(Exception):
    """Base of every error a client may see; ``status`` is its HTTP status."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ModelplaneError):
    """Malformed input: unparsable JSON, broken multipart, bad headers."""

    status = 400


class NotFound(ModelplaneError):
    """Unknown (or not yours) model, version, alias, …"""

    status = 404


class Conflict(ModelplaneError):
    """The request contradicts current state (duplicate name, alias in use, …)."""

    status = 409


class PayloadTooLarge(ModelplaneError):
    status = 413


class InvalidInput(ModelplaneError):
    """Well-formed but invalid values (bad name, unknown format, unparsable artifact)."""

    status = 422


class Unavailable(ModelplaneError):
    """Not ready, or overloaded; clients should retry after ``retry_after`` seconds."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unauthorized(ModelplaneError):
    status = 401


class Forbidden(ModelplaneError):
    status = 403


class RateLimited(ModelplaneError):
    status = 429


class DeadlineExceeded(ModelplaneError):
    status = 504


_BY_STATUS: dict[int, type[ModelplaneError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        InvalidInput,
        RateLimited,
        Unavailable,
        DeadlineExceeded,
    )
}


def error_for_status(status: int, message: str) -> ModelplaneError:
    """The domain error for an HTTP status (used by the SDK to re-raise server errors)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        err = ModelplaneError(message)
        err.status = status
        return err
    return cls(message)
