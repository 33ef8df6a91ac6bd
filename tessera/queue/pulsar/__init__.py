"""Apache Pulsar as the ingest queue (``TESSERA_QUEUE=pulsar``): one partitioned topic, one
Failover subscription that every ``tessera worker`` shares, token authentication.

``PulsarIngestQueue`` (queue.py) creates the topic and the subscription through the admin REST
API and publishes and consumes through the binary protocol with ``pulsar-client``.
"""

from tessera.queue.pulsar.queue import PulsarIngestQueue

__all__ = ["PulsarIngestQueue"]
