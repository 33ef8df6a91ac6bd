"""Apache Kafka as the ingest queue: one topic, keyed partitions, one consumer group of workers.

``KafkaIngestQueue`` (queue.py) creates the topic on ``start``, publishes with ``acks=all`` and
idempotence, and hands each worker a consumer in the group ``{topic}-workers`` that commits
offsets only up to the last message every earlier one of which was acknowledged.
"""

from tessera.queue.kafka.consumer import KafkaQueueConsumer
from tessera.queue.kafka.queue import KafkaIngestQueue

__all__ = ["KafkaIngestQueue", "KafkaQueueConsumer"]
