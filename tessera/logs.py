"""Logging set-up from LOGGING_LEVEL."""

from __future__ import annotations

import logging

from tessera.settings import Settings


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.logging_level.value,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request's full URL at INFO: webhook URLs carry secrets in their paths
    # and query strings, so its request lines never reach Tessera's log below WARNING.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    # The Elasticsearch client logs every retried request at WARNING with a traceback; Tessera
    # reports what matters itself (a 503, a start-up refusal naming ELASTIC_HOST).
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("elastic_transport").setLevel(logging.ERROR)
