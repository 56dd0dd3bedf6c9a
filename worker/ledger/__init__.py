"""The double-entry ledger: posting notifies exactly once, and checking its invariants."""
