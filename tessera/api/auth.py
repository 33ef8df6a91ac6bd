"""Signing in (OAuth2 password form, as Tracardi) and out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from pydantic import BaseModel

from tessera.api.deps import RuntimeDep, bearer_token, client_address, current_user
from tessera.model.common import DEFAULT_TENANT

router = APIRouter(tags=["authentication"])


class TokenAnswer(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


@router.post("/user/token", response_model=TokenAnswer)
async def sign_in(
    request: Request,
    runtime: RuntimeDep,
    username: Annotated[str, Form(max_length=255)],
    password: Annotated[str, Form(max_length=1024)],
) -> TokenAnswer:
    """429 with Retry-After past TESSERA_THROTTLE_LOGIN_PER_MINUTE attempts of one address."""
    await runtime.throttles.login.take(client_address(request), "sign-in attempts")
    issued = await runtime.tokens.login(DEFAULT_TENANT, username, password)
    return TokenAnswer(access_token=issued.value, expires_in=issued.expires_in)


@router.delete("/user/token", status_code=204, dependencies=[Depends(current_user)])
async def sign_out(runtime: RuntimeDep, token: Annotated[str, Depends(bearer_token)]) -> Response:
    """Revoke the token this request carries."""
    await runtime.tokens.revoke(token)
    return Response(status_code=204)
