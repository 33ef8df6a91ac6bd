"""Segments on SQLAlchemy Core: one document table, created with the configuration schema."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from tessera.model.segment import Segment
from tessera.storage.sql.documents import SqlDocumentStore, document_table

segments_table = document_table("segments")


class SqlSegmentStore(SqlDocumentStore[Segment]):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, segments_table, Segment)
