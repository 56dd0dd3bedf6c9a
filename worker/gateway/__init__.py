"""Talking to IOTPay: the signed HTTP client, expected orders, and the pending-order sweep."""
