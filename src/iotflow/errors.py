"""The one error hierarchy of IoTFlow.

::

    IoTFlowError                       500 "Internal server error" (only for real bugs)
    ├── BadRequest                     400 "Bad request" / "Validation error" (optional details)
    │   └── InvalidTimestamp           400 "Invalid timestamp"
    ├── Unauthorized                   401 "Authentication required" / "Invalid API key" / ...
    ├── Forbidden                      403 "Forbidden" / "Invalid admin token" / "Device inactive"
    ├── NotFound                       404 "Not found"
    ├── Conflict                       409 "Conflict"
    ├── PayloadTooLarge                413 "Payload too large"
    ├── UnsupportedMediaType           415 "Unsupported media type"
    ├── RateLimited                    429 "Rate limit exceeded" (Retry-After)
    └── ServiceUnavailable             503 "Service unavailable" (Retry-After)
    ConfigError                        not HTTP: a bad setting; the CLI prints it in one line

Every HTTP error is rendered by ``iotflow.http.render_error`` as
``{"error": title, "message": text[, "details": [...]] [, extra members]}``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class IoTFlowError(Exception):
    status_code: ClassVar[int] = 500
    default_title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        message: str,
        *,
        title: str | None = None,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.title = title or self.default_title
        self.details = details
        self.headers = headers or {}
        self.extra = extra or {}

    @property
    def internal(self) -> bool:
        """Answered as an internal error (a logged 500 with a request id, its message not shown):
        a 5xx without headers, i.e. not a 503 telling the client when to retry."""
        return self.status_code >= 500 and not self.headers

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.title, "message": self.message}
        if self.details:
            out["details"] = self.details
        out.update(self.extra)
        return out


class BadRequest(IoTFlowError):
    status_code = 400
    default_title = "Bad request"


class ValidationFailed(BadRequest):
    default_title = "Validation error"

    def __init__(self, field: str, message: str, **kwargs: Any) -> None:
        super().__init__(message, details=[{"field": field, "message": message}], **kwargs)


class InvalidTimestamp(ValidationFailed):
    default_title = "Invalid timestamp"


class Unauthorized(IoTFlowError):
    status_code = 401
    default_title = "Authentication required"


class Forbidden(IoTFlowError):
    status_code = 403
    default_title = "Forbidden"


class NotFound(IoTFlowError):
    status_code = 404
    default_title = "Not found"


class MethodNotAllowed(IoTFlowError):
    status_code = 405
    default_title = "Method not allowed"


class Conflict(IoTFlowError):
    status_code = 409
    default_title = "Conflict"


class PayloadTooLarge(IoTFlowError):
    status_code = 413
    default_title = "Payload too large"


class UnsupportedMediaType(IoTFlowError):
    status_code = 415
    default_title = "Unsupported media type"


class RateLimited(IoTFlowError):
    status_code = 429
    default_title = "Rate limit exceeded"


class ServiceUnavailable(IoTFlowError):
    status_code = 503
    default_title = "Service unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, **kwargs: Any) -> None:
        headers = {"Retry-After": str(retry_after)}
        super().__init__(message, headers=headers, extra={"retry_after": retry_after}, **kwargs)


class ConfigError(Exception):
    """A setting or start-up condition that stops IoTFlow; printed as one line by the CLI."""
