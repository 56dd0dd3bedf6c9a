"""iotpay-ledger: the reconciliation and double-entry ledger worker for IOTPay."""

__version__ = "0.1.0"
