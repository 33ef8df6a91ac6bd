"""Whether the settings put the records on Elasticsearch at all: asked by the maintenance
commands before anything imports the client library (storage/extras.py), so that the embedded
mode gets its one line even where the ``elastic`` extra is not installed."""

from __future__ import annotations

from tessera.errors import ConfigurationError
from tessera.settings import Settings


class NotDistributed(ConfigurationError):
    """ELASTIC_HOST is not set: the command has nothing to work on."""


def elastic_hosts(settings: Settings) -> str:
    """ELASTIC_HOST, or NotDistributed."""
    if settings.elastic_host is None:
        raise NotDistributed(
            "this applies to the distributed mode only (records in Elasticsearch): "
            "ELASTIC_HOST is not set, so records are in the embedded SQLite file"
        )
    return settings.elastic_host
