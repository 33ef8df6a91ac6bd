"""Request-scoped access to the runtime and the signed-in user."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tessera.errors import Unauthorized
from tessera.model.user import User
from tessera.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="A token from POST /user/token")
_encode = msgspec.json.Encoder().encode


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def current_user(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("this endpoint needs a bearer token from POST /user/token")
    _token, user = await runtime.tokens.authenticate(credentials.credentials)
    return user


UserDep = Annotated[User, Depends(current_user)]


def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None:
        raise Unauthorized("this endpoint needs a bearer token from POST /user/token")
    return credentials.credentials


def json_response(content: Any, status_code: int = 200) -> Response:
    """Records are msgspec structs; encode them directly rather than through pydantic."""
    return Response(_encode(content), status_code=status_code, media_type="application/json")


def client_address(request: Request) -> str:
    """The client's address, as throttles count it (behind a proxy, what uvicorn's proxy
    header handling made of it)."""
    return request.client.host if request.client is not None else "unknown"
