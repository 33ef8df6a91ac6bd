"""Logging set-up from LOGGING_LEVEL."""

from __future__ import annotations

import logging

from tessera.settings import Settings


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.logging_level.value,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
