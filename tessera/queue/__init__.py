"""The ingest queue of the async mode: its port (``ports.py``), the backlog gate and lease
renewal every backend shares, and the backends: ``embedded/`` (a durable log in SQLite files,
the default), ``redis/`` (Redis Streams), ``kafka/`` and ``pulsar/``. What drains it (the
workers, dead letters, status, retention) is ``tessera/workers``.
"""
