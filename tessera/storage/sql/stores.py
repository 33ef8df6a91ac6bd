"""Configuration stores on SQLAlchemy Core: event sources, users, access tokens, schema."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tessera.errors import Conflict
from tessera.model.common import from_epoch
from tessera.model.source import EventSource
from tessera.model.user import AccessToken, User
from tessera.storage.sql.outage import begin, connect
from tessera.storage.sql.tables import (
    SCHEMA_VERSION,
    access_tokens,
    erased_profiles,
    event_sources,
    metadata,
    schema_meta,
    users,
)
from tessera.storage.sql.upsert import insert_new


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


def _add_later_columns(connection: sa.Connection) -> None:
    """The embedded file is created from the table definitions, not migrated: columns and
    indexes a later version added to an existing table are added here (such columns are
    always nullable, so the rows already there stay valid)."""
    inspector = sa.inspect(connection)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            definition = sa.schema.CreateColumn(column).compile(dialect=connection.dialect)
            connection.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN {definition}')
        for index in table.indexes:
            index.create(connection, checkfirst=True)


class SqlSchemaStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create_schema(self) -> None:
        async with begin(self._engine) as connection:
            await connection.run_sync(metadata.create_all)
            await connection.run_sync(_add_later_columns)
            found = await connection.scalar(
                sa.select(schema_meta.c.value).where(schema_meta.c.key == "schema_version")
            )
            if found is None:
                await connection.execute(
                    schema_meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
                )

    async def keep_value(self, key: str, value: str) -> str:
        async with begin(self._engine) as connection:
            stored = await connection.scalar(
                sa.select(schema_meta.c.value).where(schema_meta.c.key == key)
            )
            if stored is not None:
                return str(stored)
            await connection.execute(schema_meta.insert().values(key=key, value=value))
        return value

    async def installed_version(self) -> int | None:
        async with connect(self._engine) as connection:
            has_table = await connection.run_sync(
                lambda sync: sa.inspect(sync).has_table(schema_meta.name)
            )
            if not has_table:
                return None
            value = await connection.scalar(
                sa.select(schema_meta.c.value).where(schema_meta.c.key == "schema_version")
            )
        return int(value) if value is not None else None


def _source_from_row(row: sa.Row[Any]) -> EventSource:
    return EventSource(
        id=row.id,
        tenant=row.tenant,
        name=row.name,
        type=row.type,
        description=row.description,
        enabled=bool(row.enabled),
        tags=list(row.tags),
        created=from_epoch(row.created),
        trust="server" if row.trust == "server" else "public",
        key=row.key,
        public_merge=bool(row.public_merge),
    )


class SqlSourceStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, tenant: str, source_id: str) -> EventSource | None:
        async with connect(self._engine) as connection:
            result = await connection.execute(
                sa.select(event_sources).where(
                    event_sources.c.tenant == tenant, event_sources.c.id == source_id
                )
            )
            row = result.first()
        return _source_from_row(row) if row is not None else None

    async def list(self, tenant: str) -> list[EventSource]:
        async with connect(self._engine) as connection:
            result = await connection.execute(
                sa.select(event_sources)
                .where(event_sources.c.tenant == tenant)
                .order_by(event_sources.c.name, event_sources.c.id)
            )
            return [_source_from_row(row) for row in result]

    async def save(self, source: EventSource) -> None:
        values = {
            "name": source.name,
            "type": source.type,
            "description": source.description,
            "enabled": source.enabled,
            "tags": list(source.tags),
            "trust": source.trust,
            "key": source.key,
            "public_merge": source.public_merge,
        }
        key = (event_sources.c.tenant == source.tenant) & (event_sources.c.id == source.id)
        async with begin(self._engine) as connection:
            updated = await connection.execute(event_sources.update().where(key).values(values))
            if updated.rowcount == 0:
                await connection.execute(
                    event_sources.insert().values(
                        tenant=source.tenant,
                        id=source.id,
                        created=_epoch(source.created),
                        **values,
                    )
                )

    async def delete(self, tenant: str, source_id: str) -> bool:
        async with begin(self._engine) as connection:
            result = await connection.execute(
                event_sources.delete().where(
                    event_sources.c.tenant == tenant, event_sources.c.id == source_id
                )
            )
        return bool(result.rowcount)


def _user_from_row(row: sa.Row[Any]) -> User:
    return User(
        id=row.id,
        tenant=row.tenant,
        email=row.email,
        password_hash=row.password_hash,
        roles=list(row.roles),
        enabled=bool(row.enabled),
        created=from_epoch(row.created),
    )


class SqlUserStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _one(self, *conditions: sa.ColumnElement[bool]) -> User | None:
        async with connect(self._engine) as connection:
            result = await connection.execute(sa.select(users).where(*conditions))
            row = result.first()
        return _user_from_row(row) if row is not None else None

    async def get_by_email(self, tenant: str, email: str) -> User | None:
        return await self._one(users.c.tenant == tenant, users.c.email == email)

    async def get(self, tenant: str, user_id: str) -> User | None:
        return await self._one(users.c.tenant == tenant, users.c.id == user_id)

    async def add(self, user: User) -> None:
        try:
            async with begin(self._engine) as connection:
                await connection.execute(
                    users.insert().values(
                        tenant=user.tenant,
                        id=user.id,
                        email=user.email,
                        password_hash=user.password_hash,
                        roles=list(user.roles),
                        enabled=user.enabled,
                        created=_epoch(user.created),
                    )
                )
        except IntegrityError as exc:
            raise Conflict(f"a user with e-mail {user.email!r} already exists") from exc

    async def count(self, tenant: str) -> int:
        async with connect(self._engine) as connection:
            value = await connection.scalar(
                sa.select(sa.func.count()).select_from(users).where(users.c.tenant == tenant)
            )
        return int(value or 0)


class SqlTokenStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, token: AccessToken) -> None:
        async with begin(self._engine) as connection:
            await connection.execute(
                access_tokens.insert().values(
                    digest=token.digest,
                    tenant=token.tenant,
                    user_id=token.user_id,
                    created=_epoch(token.created),
                    expires=_epoch(token.expires),
                    revoked=token.revoked,
                )
            )

    async def get_valid(self, digest: str, now: datetime) -> AccessToken | None:
        async with connect(self._engine) as connection:
            result = await connection.execute(
                sa.select(access_tokens).where(
                    access_tokens.c.digest == digest,
                    access_tokens.c.revoked.is_(False),
                    access_tokens.c.expires > _epoch(now),
                )
            )
            row = result.first()
        if row is None:
            return None
        return AccessToken(
            digest=row.digest,
            tenant=row.tenant,
            user_id=row.user_id,
            created=from_epoch(row.created),
            expires=from_epoch(row.expires),
            revoked=bool(row.revoked),
        )

    async def revoke(self, digest: str) -> bool:
        async with begin(self._engine) as connection:
            result = await connection.execute(
                access_tokens.update()
                .where(access_tokens.c.digest == digest, access_tokens.c.revoked.is_(False))
                .values(revoked=True)
            )
        return bool(result.rowcount)

    async def purge_expired(self, now: datetime) -> int:
        async with begin(self._engine) as connection:
            result = await connection.execute(
                access_tokens.delete().where(access_tokens.c.expires <= _epoch(now))
            )
        return int(result.rowcount or 0)


class SqlErasedProfiles:
    """The ids of erased profiles (tables.erased_profiles)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def remember(self, tenant: str, profile_ids: Sequence[str], when: datetime) -> None:
        rows = [
            {"tenant": tenant, "id": profile_id, "erased": _epoch(when)}
            for profile_id in dict.fromkeys(profile_ids)
        ]
        async with begin(self._engine) as connection:
            await insert_new(connection, erased_profiles, rows)

    async def erased(self, tenant: str, profile_id: str) -> bool:
        async with connect(self._engine) as connection:
            found = await connection.scalar(
                sa.select(erased_profiles.c.id).where(
                    erased_profiles.c.tenant == tenant, erased_profiles.c.id == profile_id
                )
            )
        return found is not None
