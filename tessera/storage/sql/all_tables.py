"""The whole configuration schema on one ``metadata``.

Tables are defined next to the stores that use them, each module adding its own to
``tables.metadata``; importing this module imports every one of them, so whoever needs the
complete schema (``create_all``, the Alembic environment, the migration completeness test) sees
every table. A module that defines a new table must be listed here.
"""

from __future__ import annotations

from tessera.storage.sql import (  # noqa: F401  (imported for the tables they define)
    consents,
    destinations,
    memory,
    processing,
    segments,
    worker_records,
    workflows,
)
from tessera.storage.sql.tables import metadata

__all__ = ["metadata"]
