"""Redis: what several API processes must share — per-key locks, the profile and session cache,
access tokens, the workflows' memory and deduplication keys.

``build_redis(settings)`` (services.py) builds them all on one client; every key starts with
``TESSERA_REDIS_PREFIX`` so installations (and tests) sharing one Redis never see each other's.
Written for one Redis server (or a primary with replicas): several scripts touch keys that a
Redis Cluster would place in different slots.
"""
