"""Records shared by the server, the SDK and the CLI (pydantic only; no server imports)."""
