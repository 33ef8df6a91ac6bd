"""Contract of the configuration ports: SourceStore, UserStore, TokenStore, SchemaStore.

Every test runs once per configuration backend (see conftest.py).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tessera.errors import Conflict
from tessera.model.source import EventSource
from tessera.model.user import AccessToken, User
from tests.contract.conftest import ConfigBackend, ConfigOpener

TENANT = "acme"
OTHER_TENANT = "globex"
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


def make_source(
    source_id: str,
    *,
    tenant: str = TENANT,
    name: str | None = None,
    created: datetime = T0,
) -> EventSource:
    return EventSource(
        id=source_id,
        tenant=tenant,
        name=name if name is not None else f"source {source_id}",
        created=created,
    )


def make_user(
    user_id: str, email: str, *, tenant: str = TENANT, roles: list[str] | None = None
) -> User:
    return User(
        id=user_id,
        tenant=tenant,
        email=email,
        password_hash=f"$argon2id$v=19$m=65536,t=3,p=4${user_id}",
        created=T0,
        roles=roles if roles is not None else ["admin"],
    )


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def make_token(
    secret: str,
    *,
    expires: datetime,
    tenant: str = TENANT,
    user_id: str = "u-1",
    revoked: bool = False,
) -> AccessToken:
    return AccessToken(
        digest=digest(secret),
        tenant=tenant,
        user_id=user_id,
        created=T0,
        expires=expires,
        revoked=revoked,
    )


# --- SourceStore -------------------------------------------------------------------------------


async def test_source_round_trips_every_field(config_backend: ConfigBackend) -> None:
    source = EventSource(
        id="web-shop",
        tenant=TENANT,
        name="Sklep internetowy — Kraków 🛒",
        created=datetime(2024, 5, 1, 14, 0, 0, 654321, tzinfo=PLUS_TWO),
        type="webhook",
        description="Events from the shop.\nSecond line: ünïcödé",
        enabled=False,
        tags=["shop", "prod", "żółw"],
    )
    await config_backend.sources.save(source)

    got = await config_backend.sources.get(TENANT, "web-shop")

    assert got == source
    assert got is not None
    assert got.created == datetime(2024, 5, 1, 12, 0, 0, 654321, tzinfo=UTC)
    assert got.created.utcoffset() is not None
    assert got.enabled is False
    assert got.tags == ["shop", "prod", "żółw"]


async def test_source_defaults_round_trip(config_backend: ConfigBackend) -> None:
    source = make_source("plain")
    await config_backend.sources.save(source)

    got = await config_backend.sources.get(TENANT, "plain")

    assert got == source
    assert got is not None
    assert (got.type, got.description, got.enabled, got.tags) == ("rest", "", True, [])


async def test_unknown_source_is_none_and_empty_tenant_lists_nothing(
    config_backend: ConfigBackend,
) -> None:
    await config_backend.sources.save(make_source("known"))

    assert await config_backend.sources.get(TENANT, "unknown") is None
    assert await config_backend.sources.list("empty-tenant") == []


async def test_sources_are_listed_by_name(config_backend: ConfigBackend) -> None:
    names = {"s-1": "Website", "s-2": "Android app", "s-3": "Checkout", "s-4": "Backend hook"}
    for source_id, name in names.items():
        await config_backend.sources.save(make_source(source_id, name=name))

    listed = await config_backend.sources.list(TENANT)

    assert [source.name for source in listed] == [
        "Android app",
        "Backend hook",
        "Checkout",
        "Website",
    ]
    assert [source.id for source in listed] == ["s-2", "s-4", "s-3", "s-1"]
    assert listed[0] == make_source("s-2", name="Android app")


async def test_saving_a_source_again_replaces_it(config_backend: ConfigBackend) -> None:
    await config_backend.sources.save(make_source("s-1", name="Alpha"))
    await config_backend.sources.save(make_source("s-2", name="Beta"))
    replacement = EventSource(
        id="s-1",
        tenant=TENANT,
        name="Zulu",
        created=T0,
        type="webhook",
        description="renamed",
        enabled=False,
        tags=["changed"],
    )

    await config_backend.sources.save(replacement)

    assert await config_backend.sources.get(TENANT, "s-1") == replacement
    listed = await config_backend.sources.list(TENANT)
    assert [(source.id, source.name) for source in listed] == [("s-2", "Beta"), ("s-1", "Zulu")]
    assert listed[1] == replacement


async def test_saving_an_unchanged_source_again_is_harmless(
    config_backend: ConfigBackend,
) -> None:
    source = make_source("same")
    await config_backend.sources.save(source)
    await config_backend.sources.save(source)

    assert await config_backend.sources.get(TENANT, "same") == source
    assert await config_backend.sources.list(TENANT) == [source]


async def test_deleting_a_source(config_backend: ConfigBackend) -> None:
    await config_backend.sources.save(make_source("s-1", name="One"))
    await config_backend.sources.save(make_source("s-2", name="Two"))

    assert await config_backend.sources.delete(TENANT, "s-1") is True

    assert await config_backend.sources.get(TENANT, "s-1") is None
    assert [source.id for source in await config_backend.sources.list(TENANT)] == ["s-2"]
    assert await config_backend.sources.delete(TENANT, "s-1") is False
    assert await config_backend.sources.delete(TENANT, "never-there") is False
    assert await config_backend.sources.get(TENANT, "s-2") == make_source("s-2", name="Two")


async def test_sources_of_tenants_are_apart(config_backend: ConfigBackend) -> None:
    ours = make_source("web", name="Our website")
    theirs = make_source("web", tenant=OTHER_TENANT, name="Their website")
    only_theirs = make_source("app", tenant=OTHER_TENANT, name="Their app")
    for source in (ours, theirs, only_theirs):
        await config_backend.sources.save(source)

    assert await config_backend.sources.get(TENANT, "web") == ours
    assert await config_backend.sources.get(OTHER_TENANT, "web") == theirs
    assert await config_backend.sources.get(TENANT, "app") is None
    assert await config_backend.sources.list(TENANT) == [ours]
    assert await config_backend.sources.list(OTHER_TENANT) == [only_theirs, theirs]

    # Replacing or deleting in one tenant leaves the other alone.
    await config_backend.sources.save(make_source("web", name="Renamed"))
    assert await config_backend.sources.get(OTHER_TENANT, "web") == theirs
    assert await config_backend.sources.delete(TENANT, "app") is False
    assert await config_backend.sources.delete(TENANT, "web") is True
    assert await config_backend.sources.list(OTHER_TENANT) == [only_theirs, theirs]


# --- UserStore ---------------------------------------------------------------------------------


async def test_user_round_trips_by_id_and_by_email(config_backend: ConfigBackend) -> None:
    user = User(
        id="u-1",
        tenant=TENANT,
        email="zoë@example.com",
        password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        created=datetime(2024, 5, 1, 14, 0, 0, 5, tzinfo=PLUS_TWO),
        roles=["admin", "marketer"],
        enabled=False,
    )
    await config_backend.users.add(user)

    by_id = await config_backend.users.get(TENANT, "u-1")
    by_email = await config_backend.users.get_by_email(TENANT, "zoë@example.com")

    assert by_id == user
    assert by_email == user
    assert by_id is not None
    assert by_id.created == datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=UTC)
    assert by_id.roles == ["admin", "marketer"]
    assert by_id.enabled is False
    assert await config_backend.users.count(TENANT) == 1


async def test_unknown_users_are_none_and_counted_as_zero(config_backend: ConfigBackend) -> None:
    assert await config_backend.users.count(TENANT) == 0
    await config_backend.users.add(make_user("u-1", "a@example.com"))

    assert await config_backend.users.get(TENANT, "u-2") is None
    assert await config_backend.users.get_by_email(TENANT, "b@example.com") is None
    assert await config_backend.users.count("empty-tenant") == 0


async def test_users_are_counted(config_backend: ConfigBackend) -> None:
    for number in range(5):
        await config_backend.users.add(make_user(f"u-{number}", f"user{number}@example.com"))

    assert await config_backend.users.count(TENANT) == 5
    for number in range(5):
        got = await config_backend.users.get_by_email(TENANT, f"user{number}@example.com")
        assert got is not None
        assert got.id == f"u-{number}"


async def test_a_taken_email_is_a_conflict(config_backend: ConfigBackend) -> None:
    first = make_user("u-1", "admin@example.com", roles=["admin"])
    await config_backend.users.add(first)

    with pytest.raises(Conflict):
        await config_backend.users.add(make_user("u-2", "admin@example.com", roles=["viewer"]))

    assert await config_backend.users.count(TENANT) == 1
    assert await config_backend.users.get(TENANT, "u-2") is None
    assert await config_backend.users.get(TENANT, "u-1") == first
    assert await config_backend.users.get_by_email(TENANT, "admin@example.com") == first
    # The store still works after the refused insert.
    await config_backend.users.add(make_user("u-3", "other@example.com"))
    assert await config_backend.users.count(TENANT) == 2


async def test_users_of_tenants_are_apart(config_backend: ConfigBackend) -> None:
    ours = make_user("u-1", "admin@example.com")
    theirs = make_user("u-1", "admin@example.com", tenant=OTHER_TENANT, roles=["viewer"])
    await config_backend.users.add(ours)
    # The same e-mail (and id) in another tenant is another user, not a conflict.
    await config_backend.users.add(theirs)
    await config_backend.users.add(make_user("u-2", "second@example.com", tenant=OTHER_TENANT))

    assert await config_backend.users.get(TENANT, "u-1") == ours
    assert await config_backend.users.get(OTHER_TENANT, "u-1") == theirs
    assert await config_backend.users.get_by_email(OTHER_TENANT, "admin@example.com") == theirs
    assert await config_backend.users.get_by_email(TENANT, "second@example.com") is None
    assert await config_backend.users.get(TENANT, "u-2") is None
    assert await config_backend.users.count(TENANT) == 1
    assert await config_backend.users.count(OTHER_TENANT) == 2


# --- TokenStore --------------------------------------------------------------------------------


async def test_valid_token_round_trips(config_backend: ConfigBackend) -> None:
    token = AccessToken(
        digest=digest("secret-1"),
        tenant=TENANT,
        user_id="u-1",
        created=datetime(2024, 5, 1, 14, 0, 0, 250000, tzinfo=PLUS_TWO),
        expires=T0 + timedelta(hours=1),
    )
    await config_backend.tokens.add(token)

    got = await config_backend.tokens.get_valid(digest("secret-1"), T0)

    assert got == token
    assert got is not None
    assert (got.tenant, got.user_id, got.revoked) == (TENANT, "u-1", False)
    assert got.expires == datetime(2024, 5, 1, 13, 0, 0, 123456, tzinfo=UTC)
    assert await config_backend.tokens.get_valid(digest("unknown"), T0) is None


async def test_expired_token_is_not_valid(config_backend: ConfigBackend) -> None:
    expires = T0 + timedelta(hours=1)
    await config_backend.tokens.add(make_token("secret", expires=expires))

    before = await config_backend.tokens.get_valid(digest("secret"), expires - timedelta(seconds=1))
    at_expiry = await config_backend.tokens.get_valid(digest("secret"), expires)
    after = await config_backend.tokens.get_valid(digest("secret"), expires + timedelta(days=1))

    assert before is not None
    assert before.digest == digest("secret")
    assert at_expiry is None
    assert after is None


async def test_revoked_token_is_not_valid(config_backend: ConfigBackend) -> None:
    expires = T0 + timedelta(hours=1)
    await config_backend.tokens.add(make_token("kept", expires=expires))
    await config_backend.tokens.add(make_token("revoked", expires=expires))
    await config_backend.tokens.add(make_token("born-revoked", expires=expires, revoked=True))

    assert await config_backend.tokens.revoke(digest("revoked")) is True
    assert await config_backend.tokens.revoke(digest("revoked")) is False
    assert await config_backend.tokens.revoke(digest("born-revoked")) is False
    assert await config_backend.tokens.revoke(digest("unknown")) is False

    assert await config_backend.tokens.get_valid(digest("revoked"), T0) is None
    assert await config_backend.tokens.get_valid(digest("born-revoked"), T0) is None
    kept = await config_backend.tokens.get_valid(digest("kept"), T0)
    assert kept is not None
    assert kept.revoked is False


async def test_purging_expired_tokens_counts_them(config_backend: ConfigBackend) -> None:
    now = T0 + timedelta(days=1)
    expired = [make_token(f"old-{i}", expires=now - timedelta(minutes=i + 1)) for i in range(3)]
    expired.append(make_token("old-revoked", expires=now - timedelta(hours=1), revoked=True))
    expiring_now = make_token("expiring-now", expires=now)
    valid = [make_token(f"new-{i}", expires=now + timedelta(minutes=i + 1)) for i in range(2)]
    revoked_valid = make_token("revoked-valid", expires=now + timedelta(hours=1), revoked=True)
    for token in [*expired, expiring_now, *valid, revoked_valid]:
        await config_backend.tokens.add(token)

    assert await config_backend.tokens.purge_expired(now) == 5
    assert await config_backend.tokens.purge_expired(now) == 0

    for token in valid:
        assert await config_backend.tokens.get_valid(token.digest, now) == token
    # A purged token is gone, not merely invalid: nothing is left to revoke.
    for token in [*expired, expiring_now]:
        assert await config_backend.tokens.revoke(token.digest) is False
    # A revoked token that has not expired yet is not purged, only refused.
    assert await config_backend.tokens.get_valid(revoked_valid.digest, now) is None
    later = now + timedelta(hours=2)
    assert await config_backend.tokens.purge_expired(later) == 3


async def test_tokens_keep_their_tenant_and_user(config_backend: ConfigBackend) -> None:
    expires = T0 + timedelta(hours=1)
    ours = make_token("ours", expires=expires, user_id="u-1")
    theirs = make_token("theirs", expires=expires, tenant=OTHER_TENANT, user_id="u-1")
    await config_backend.tokens.add(ours)
    await config_backend.tokens.add(theirs)

    got_ours = await config_backend.tokens.get_valid(digest("ours"), T0)
    got_theirs = await config_backend.tokens.get_valid(digest("theirs"), T0)

    assert got_ours == ours
    assert got_theirs == theirs
    assert got_theirs is not None
    assert got_theirs.tenant == OTHER_TENANT
    assert await config_backend.tokens.revoke(digest("theirs")) is True
    assert await config_backend.tokens.get_valid(digest("ours"), T0) == ours


# --- SchemaStore and lifecycle -----------------------------------------------------------------


async def test_schema_version_is_none_before_install(
    open_config: ConfigOpener, tmp_path: Path
) -> None:
    async with open_config(tmp_path / "fresh") as backend:
        assert await backend.schema.installed_version() is None

        await backend.schema.create_schema()

        version = await backend.schema.installed_version()
        assert isinstance(version, int)
        assert version >= 1


async def test_creating_the_schema_again_is_harmless(config_backend: ConfigBackend) -> None:
    version = await config_backend.schema.installed_version()
    assert isinstance(version, int)
    source = make_source("s-1")
    user = make_user("u-1", "admin@example.com")
    await config_backend.sources.save(source)
    await config_backend.users.add(user)

    await config_backend.schema.create_schema()
    await config_backend.schema.create_schema()

    assert await config_backend.schema.installed_version() == version
    assert await config_backend.sources.list(TENANT) == [source]
    assert await config_backend.users.get(TENANT, "u-1") == user
    assert await config_backend.users.count(TENANT) == 1


async def test_configuration_survives_reopen(open_config: ConfigOpener, tmp_path: Path) -> None:
    place = tmp_path / "config"
    source = make_source("s-1", name="Website")
    user = make_user("u-1", "admin@example.com")
    token = make_token("secret", expires=T0 + timedelta(hours=1))

    async with open_config(place) as first:
        await first.schema.create_schema()
        version = await first.schema.installed_version()
        await first.sources.save(source)
        await first.users.add(user)
        await first.tokens.add(token)

    async with open_config(place) as second:
        assert await second.schema.installed_version() == version
        assert await second.sources.list(TENANT) == [source]
        assert await second.users.get_by_email(TENANT, "admin@example.com") == user
        assert await second.tokens.get_valid(token.digest, T0) == token
        with pytest.raises(Conflict):
            await second.users.add(make_user("u-2", "admin@example.com"))
