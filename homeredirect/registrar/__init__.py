"""The home server's registrar (RFC 3261 §10.3) and its location service."""
