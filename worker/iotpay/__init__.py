"""The IOTPay protocol: signatures, notifies, order statuses. No I/O here."""
