"""Reports: business days, nightly reconciliation, the settlement files (export, verify), alerts."""
