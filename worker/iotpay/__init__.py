"""The IOTPay protocol: notify bodies, their authentication and fields, signatures, channels and
families, order statuses. No I/O here."""
