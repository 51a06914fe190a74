"""The proxy's errors: each one an HTTP status and an OpenAI-shaped body callers (and SDKs) can branch on.

The body is OpenAI's: `{"error": {"message", "type", "param", "code"}}`. `type` is OpenAI's coarse class
(`invalid_request_error`, `permission_error`, `rate_limit_error`, `server_error`); `code` is the proxy's
precise reason (`model_not_found`, `request_too_large`, ...), stable for callers to branch on; `param`
names the request field at fault when there is one.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ProxyError(Exception):
    """An error the caller sees as an OpenAI error body with `status`."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"
    #: Seconds a caller should wait before retrying; sent as Retry-After when set.
    retry_after: ClassVar[int | None] = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        """The JSON body the caller receives."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


class InvalidRequest(ProxyError):
    """The body is not JSON, has wrong types or values, or asks for something unsupported."""

    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class ModelForbidden(ProxyError):
    """The model named belongs to another team or stage."""

    status = 403
    error_type = "permission_error"
    code = "model_not_permitted"


class ModelNotFound(ProxyError):
    """No endpoint of this team stage has that name."""

    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class RouteNotFound(ProxyError):
    """No route for that method and path."""

    status = 404
    error_type = "invalid_request_error"
    code = "unknown_url"


class PayloadTooLarge(ProxyError):
    """The body, or the number of inputs in it, is over the configured limit."""

    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class Throttled(ProxyError):
    """SageMaker throttled the call; retry with backoff."""

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retry_after = 1


class ModelFailed(ProxyError):
    """The model container returned an error, or an answer the proxy cannot read."""

    status = 502
    error_type = "server_error"
    code = "model_error"


class ModelUnavailable(ProxyError):
    """The endpoint does not exist (yet), is not InService, is scaled to zero, or SageMaker is unavailable."""

    status = 503
    error_type = "server_error"
    code = "model_unavailable"
    retry_after = 5


class ModelScalingUp(ModelUnavailable):
    """The model's inference component has zero copies (scaled to zero on a dev stage): the request that
    found it so starts the scale-out, which takes minutes; retry after Retry-After."""

    code = "model_scaling_up"
    retry_after = 60


class ModelTimeout(ProxyError):
    """The model did not answer within the proxy's read timeout."""

    status = 504
    error_type = "server_error"
    code = "timeout"


class InternalError(ProxyError):
    """A fault in the proxy itself; details are logged, never returned."""

    status = 500
    error_type = "server_error"
    code = "internal_error"
