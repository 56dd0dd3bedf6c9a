"""The exception tree of iotpay-ledger.

    IotLedgerError                 root; everything this package raises on purpose
    ├── ConfigError                an environment variable is missing or invalid (names it)
    ├── PermanentError             retrying cannot help: bad data, bad signature
    │   ├── ValidationError        a field is missing or malformed (has .field)
    │   ├── SignatureError         the sign does not verify with any key of the merchant
    │   └── UnknownMerchantError   mchId is not configured
    └── RetryableError             a transient failure: database or broker unavailable

Third-party errors (psycopg, redis, httpx) are translated into these at the boundary.
"""

from __future__ import annotations


class IotLedgerError(Exception):
    """Root of every error this package raises deliberately."""


class ConfigError(IotLedgerError):
    """A configuration value is missing or invalid; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class PermanentError(IotLedgerError):
    """A failure that no retry can fix (the input itself is wrong)."""


class ValidationError(PermanentError):
    """A field of a message is missing or malformed."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class SignatureError(PermanentError):
    """The `sign` of a message does not verify."""


class UnknownMerchantError(PermanentError):
    """The message names an mchId that is not configured."""

    def __init__(self, mch_id: str) -> None:
        self.mch_id = mch_id
        super().__init__(f"mchId: unknown merchant {mch_id!r}")


class RetryableError(IotLedgerError):
    """A transient failure (database or broker down); trying again later may succeed."""
