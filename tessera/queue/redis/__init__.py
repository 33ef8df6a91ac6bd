"""The ingest queue on Redis Streams (``TESSERA_QUEUE=redis``)."""
