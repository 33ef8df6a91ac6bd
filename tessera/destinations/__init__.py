"""Destinations: webhooks that hear about profiles and events, through a persisted outbox.

``dispatch`` plans messages on the ingest path (no I/O but a cached list), ``worker`` delivers
them in the background with retries, ``checks`` refuses destinations that could never work.
"""
