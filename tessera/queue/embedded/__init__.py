"""The embedded ingest queue: an append-only log in SQLite files beside the data (no server)."""
