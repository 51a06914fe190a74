"""The proxy's errors: each one an HTTP status and a stable `type` callers can branch on."""

from __future__ import annotations

from typing import Any, ClassVar


class ProxyError(Exception):
    """An error the caller sees as `{"error": {"type", "message"}}` with `status`."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"
    #: Seconds a caller should wait before retrying; sent as Retry-After when set.
    retry_after: ClassVar[int | None] = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON body the caller receives."""
        return {"error": {"type": self.error_type, "message": self.message}}


class InvalidRequest(ProxyError):
    """The body is not JSON, has wrong types or values, or asks for something unsupported."""

    status = 400
    error_type = "invalid_request"


class ModelForbidden(ProxyError):
    """The model named belongs to another team or stage."""

    status = 403
    error_type = "permission_denied"


class ModelNotFound(ProxyError):
    """No endpoint of this team stage has that name."""

    status = 404
    error_type = "model_not_found"


class RouteNotFound(ProxyError):
    """No route for that method and path."""

    status = 404
    error_type = "not_found"


class PayloadTooLarge(ProxyError):
    """The body, or the number of inputs in it, is over the configured limit."""

    status = 413
    error_type = "payload_too_large"


class Throttled(ProxyError):
    """SageMaker throttled the call; retry with backoff."""

    status = 429
    error_type = "throttled"
    retry_after = 1


class ModelFailed(ProxyError):
    """The model container returned an error, or an answer the proxy cannot read."""

    status = 502
    error_type = "model_error"


class ModelUnavailable(ProxyError):
    """The endpoint does not exist (yet), is not InService, or SageMaker is unavailable."""

    status = 503
    error_type = "model_unavailable"
    retry_after = 5


class ModelTimeout(ProxyError):
    """The model did not answer within the proxy's read timeout."""

    status = 504
    error_type = "timeout"


class InternalError(ProxyError):
    """A fault in the proxy itself; details are logged, never returned."""

    status = 500
    error_type = "internal_error"
