``python -m homeredirect.tools.certs --out run/`` makes a throw-away CA and TLS certificates for testing SIP over TLS locally.
