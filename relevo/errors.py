"""The one error tree of Relevo.

    RelevoError
     +-- ValidationError        input that breaks a rule; carries per-field details
     |    +-- PayloadTooLarge   a request or event over its size limit
     +-- AuthError              no credential, or an unknown one
     |    +-- Forbidden         a known credential without the needed scope
     +-- NotFound               the thing asked for does not exist (or was erased)
     +-- Conflict               it exists already (create, not replace)
     +-- Overloaded             backpressure: try again after ``retry_after`` seconds
     +-- BackendError           a store or stream failed
          +-- BackendNotInstalled  the driver for a configured URL is missing

No HTTP status codes here: ``relevo.web.errors`` maps these classes to responses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorDetail:
    """One problem found in an input: where (a JSON path) and what."""

    location: str
    message: str
    code: str = "invalid"

    def as_dict(self) -> dict[str, Any]:
        return {"location": self.location, "message": self.message, "code": self.code}


class RelevoError(Exception):
    """Base of every error Relevo raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, details: list[ErrorDetail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[ErrorDetail] = details or []


class ValidationError(RelevoError):
    code = "invalid_request"


class PayloadTooLarge(ValidationError):
    code = "payload_too_large"


class AuthError(RelevoError):
    code = "unauthorized"


class Forbidden(AuthError):
    code = "forbidden"


class NotFound(RelevoError):
    code = "not_found"


class Conflict(RelevoError):
    code = "conflict"


class Overloaded(RelevoError):
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendError(RelevoError):
    code = "backend_error"


class BackendNotInstalled(BackendError):
    code = "backend_not_installed"

    def __init__(self, scheme: str, extra: str) -> None:
        super().__init__(
            f"the {scheme!r} backend needs an optional dependency: pip install 'relevo[{extra}]'"
        )
        self.scheme = scheme
        self.extra = extra
