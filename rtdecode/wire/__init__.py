"""The wire protocol (docs/protocol.md), its Python client and producers, CURVE authentication and the
hostile-input corpus the daemon is tested against."""
