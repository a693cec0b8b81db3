"""The transaction-stateful proxy (RFC 3261 §16): `stateful` (forwarding and response
contexts), `channel` (a client transaction's way to its next hop), `routing` (Via,
Route, Record-Route and Path header work)."""
