"""Primitives the rest of Tessera builds on: locks, the record cache, loading caches, bounded
patterns and request budgets, templates and reshaping, background loops and rate-limit buckets.

Nothing here knows about ingestion, identity, workflows or storage backends: this package
imports only `tessera.errors` and `tessera.model`, so every other package may import it
(docs/architecture.md).
"""
