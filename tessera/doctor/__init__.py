"""`tessera doctor` and the start-up preflight: read-only checks of the settings, the stores,
Redis, Elasticsearch and the queue, reported as one table (docs/doctor.md). Nothing here is
needed to serve; the running server's own upkeep is `tessera/ops`.
"""
