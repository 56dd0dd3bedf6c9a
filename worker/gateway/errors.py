"""Errors of the gateway client, placed in worker.errors' tree.

    RetryableError
    └── GatewayNetworkError        no usable answer: connection, timeout, 5xx (after retries)
    PermanentError
    ├── GatewayFailError           the gateway answered retCode/resCode FAIL (has .ret_msg)
    ├── GatewayBadSignatureError   the response's `sign` does not verify (also a SignatureError)
    └── GatewayMalformedError      the response is not the documented shape (also a ValidationError)

httpx's exceptions never leave the client: they become GatewayNetworkError.
"""

from __future__ import annotations

from worker.errors import PermanentError, RetryableError, SignatureError, ValidationError


class GatewayNetworkError(RetryableError):
    """No usable answer from the gateway (connect/read error, timeout, HTTP 5xx).

    `maybe_applied` is True when a refund or void may have reached the gateway before the
    failure: query before trying again, never blindly resend.
    """

    def __init__(self, message: str, *, endpoint: str = "", status_code: int | None = None,
                 maybe_applied: bool = False) -> None:
        self.endpoint = endpoint
        self.status_code = status_code
        self.maybe_applied = maybe_applied
        super().__init__(f"{endpoint}: {message}" if endpoint else message)


class GatewayFailError(PermanentError):
    """The gateway understood the call and said FAIL (retCode or resCode), with its message."""

    def __init__(self, ret_msg: str, *, endpoint: str = "", err_code: str | None = None) -> None:
        self.ret_msg = ret_msg
        self.endpoint = endpoint
        self.err_code = err_code
        super().__init__(f"{endpoint}: gateway answered FAIL: {ret_msg or '(no retMsg)'}"
                         + (f" [{err_code}]" if err_code else ""))


class GatewayBadSignatureError(SignatureError):
    """The `sign` of a gateway response does not verify with the merchant's keys."""


class GatewayMalformedError(ValidationError):
    """The response is not JSON, or lacks a field the protocol requires (names the field)."""
