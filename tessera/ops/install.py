"""Installing Tessera: the schema, the admin user, and (in development) a default source.

One implementation serves ``tessera install``, ``POST /install`` and the first start.
"""

from __future__ import annotations

import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tessera.errors import Conflict, Forbidden, InvalidPayload
from tessera.model.common import DEFAULT_TENANT, new_id, utcnow
from tessera.model.source import EventSource
from tessera.model.user import ADMIN_ROLE, User
from tessera.security.passwords import check_password_strength, hash_password
from tessera.settings import Settings, generate_secret, weak_secret_problem
from tessera.storage.factory import Storage
from tessera.storage.private_files import private_data_dir

log = logging.getLogger(__name__)

TOKEN_FILE_NAME = "installation-token"  # noqa: S105 - a file name
DEFAULT_SOURCE_NAME = "Default source"


@dataclass(frozen=True, slots=True)
class InstallReport:
    schema_created: bool
    admin_created: bool
    admin_exists: bool


def installation_token(settings: Settings) -> str:
    """The configured token; in development, one generated once and kept in the data folder."""
    if settings.installation_token:
        return settings.installation_token.get_secret_value()
    path = settings.data_dir / TOKEN_FILE_NAME
    private_data_dir(settings.data_dir)  # a token file left readable by others is tightened
    if path.exists():
        return path.read_text().strip()
    token = generate_secret()
    _write_private(path, token)
    return token


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text + "\n")


def check_installation_token(settings: Settings, given: str) -> None:
    expected = installation_token(settings)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise Forbidden("the installation token is wrong")


async def install(
    storage: Storage,
    settings: Settings,
    *,
    admin_email: str | None,
    admin_password: str | None,
) -> InstallReport:
    """Create what is missing; never change what exists (safe to run again)."""
    before = await storage.config_schema.installed_version()
    await storage.install_schema()
    admin_created = False
    if admin_email and admin_password:
        admin_created = await create_admin(storage, settings, admin_email, admin_password)
    admins = await storage.users.count(DEFAULT_TENANT)
    return InstallReport(
        schema_created=before is None, admin_created=admin_created, admin_exists=admins > 0
    )


async def create_admin(storage: Storage, settings: Settings, email: str, password: str) -> bool:
    """Create the admin unless a user already exists. True when created."""
    email = email.strip().lower()
    if "@" not in email:
        raise InvalidPayload("username: must be an e-mail address")
    check_password_strength(password)
    problem = weak_secret_problem(password) if settings.is_production else None
    if problem is not None:
        raise InvalidPayload(f"password: production needs a hard-to-guess password; {problem}")
    if await storage.users.count(DEFAULT_TENANT) > 0:
        return False
    admin = User(
        id=new_id(),
        tenant=DEFAULT_TENANT,
        email=email,
        password_hash=await hash_password(password),
        created=utcnow(),
        roles=[ADMIN_ROLE],
    )
    try:
        await storage.users.add(admin)
    except Conflict:
        # Another process starting at the same moment (an API process of `tessera serve
        # --workers`, a replica) created it between the count and the add.
        return False
    return True


MERGE_SALT_KEY = "identity_hash_salt"


async def identity_salt(storage: Storage, settings: Settings) -> str:
    """AUTO_PROFILE_MERGING when set; else a random salt made once and kept in the
    configuration store, so every process (and every restart) hashes the same way."""
    if settings.auto_profile_merging:
        return settings.auto_profile_merging.get_secret_value()
    return await storage.shared_values.keep_value(MERGE_SALT_KEY, generate_secret())


async def bootstrap(storage: Storage, settings: Settings) -> EventSource | None:
    """First start: the schema always; in development a default source when there is none;
    the admin only when TESSERA_ADMIN_EMAIL and TESSERA_ADMIN_PASSWORD are set."""
    await storage.install_schema()
    if settings.admin_email and settings.admin_password:
        password = settings.admin_password.get_secret_value()
        await create_admin(storage, settings, settings.admin_email, password)
    if settings.is_production:
        return None
    installation_token(settings)  # generated now, so the operator finds it before installing
    existing = await storage.sources.list(DEFAULT_TENANT)
    if existing:
        return existing[0]
    source = EventSource(
        id=new_id(), tenant=DEFAULT_TENANT, name=DEFAULT_SOURCE_NAME, created=utcnow()
    )
    await storage.sources.save(source)
    return source
