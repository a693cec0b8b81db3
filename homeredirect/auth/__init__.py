"""Authentication of SIP requests before anything about the user is revealed or acted on:
Digest (RFC 3261 §22, RFC 7616, RFC 8760) through `twisted.cred`."""
