"""POST /install: create the schema and the first admin, guarded by INSTALLATION_TOKEN."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from tessera.api.deps import RuntimeDep, client_address
from tessera.model.common import DEFAULT_TENANT
from tessera.ops.install import check_installation_token, install

router = APIRouter(tags=["installation"])


class InstallRequest(BaseModel):
    token: str = Field(max_length=1024, description="Must equal INSTALLATION_TOKEN")
    username: str | None = Field(None, max_length=255, description="The admin's e-mail")
    password: str | None = Field(None, max_length=1024)
    needs_admin: bool = True


class InstallAnswer(BaseModel):
    schema_created: bool
    admin_created: bool
    admin_exists: bool


class InstallStatus(BaseModel):
    schema_installed: bool
    admin_exists: bool


@router.get("/install", response_model=InstallStatus)
async def install_status(runtime: RuntimeDep) -> InstallStatus:
    """Whether the schema and an admin exist; tells a console whether to show the installer."""
    version = await runtime.storage.config_schema.installed_version()
    admins = await runtime.storage.users.count(DEFAULT_TENANT) if version else 0
    return InstallStatus(schema_installed=version is not None, admin_exists=admins > 0)


@router.post("/install", response_model=InstallAnswer)
async def install_tessera(
    request: InstallRequest, http: Request, runtime: RuntimeDep
) -> InstallAnswer:
    """429 with Retry-After past TESSERA_THROTTLE_INSTALL_PER_MINUTE attempts of one address:
    the installation token cannot be guessed by trying."""
    await runtime.throttles.install.take(client_address(http), "installation attempts")
    check_installation_token(runtime.settings, request.token)
    wants_admin = request.needs_admin and request.username and request.password
    report = await install(
        runtime.storage,
        runtime.settings,
        admin_email=request.username if wants_admin else None,
        admin_password=request.password if wants_admin else None,
    )
    return InstallAnswer(
        schema_created=report.schema_created,
        admin_created=report.admin_created,
        admin_exists=report.admin_exists,
    )
