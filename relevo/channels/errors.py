"""Errors of outbound delivery, grafted onto the one tree of ``relevo.errors``.

    RelevoError
     +-- ValidationError
     |    +-- UnsafeUrl             a destination URL or address refused by the SSRF policy
     +-- OutboundError              a send failed before a complete response: worth a retry
          +-- OutboundTimeout       connect, read, write, pool or total time ran out
          +-- OutboundConnectError  no connection could be made
          |    +-- HostNotFound     the name did not resolve
          +-- OutboundNetworkError  the connection broke, or the peer spoke broken HTTP

``UnsafeUrl`` is permanent (retrying cannot make a private address public); every
``OutboundError`` is transient. ``relevo.channels.retry.classify`` encodes exactly that.
"""

from __future__ import annotations

from relevo.errors import ErrorDetail, RelevoError, ValidationError


class UnsafeUrl(ValidationError):
    """A destination refused by the outbound policy.

    ``reason`` is a short machine-readable code (``"loopback"``, ``"private"``, ``"metadata"``,
    ``"scheme"``, ``"userinfo"``, ...); the message says the same for a person, naming the host or
    address that was judged.
    """

    code = "unsafe_url"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, details=[ErrorDetail("url", message, code=reason)])
        self.reason = reason


class OutboundError(RelevoError):
    """A send that failed before a complete response was read (transient)."""

    code = "outbound_error"


class OutboundTimeout(OutboundError):
    """A time limit ran out; ``phase`` is connect, read, write, pool or total."""

    code = "outbound_timeout"

    def __init__(self, message: str, *, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


class OutboundConnectError(OutboundError):
    code = "outbound_connect_error"


class HostNotFound(OutboundConnectError):
    code = "host_not_found"


class OutboundNetworkError(OutboundError):
    code = "outbound_network_error"
