"""Reports: business days, nightly reconciliation, settlement CSVs, alerts, the clock and the demo."""
