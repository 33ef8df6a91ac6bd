"""Answers for requests the management API refuses: what was wrong, never what was sent.

FastAPI's own answer to a body that fails validation echoes each bad value back (``input``).
That repeats secrets (a password that was too short) into answers and logs, and a value no
UTF-8 can encode (a lone surrogate such as ``"\\ud800"``, which JSON's escapes allow) made
the answer itself fail: a 500, with the request's values written to the log at ERROR. These
answers keep the place, the reason and the limits of each problem and drop the value; any
text left is made encodable first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

# The parts of a pydantic error that describe the problem; `input` (the value) is left out.
_KEPT = ("type", "loc", "msg", "ctx")


def encodable(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so that UTF-8 can encode it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _encodable_tree(value: Any) -> Any:
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, Mapping):
        return {encodable(str(key)): _encodable_tree(item) for key, item in value.items()}
    if isinstance(value, Sequence):
        return [_encodable_tree(item) for item in value]
    return value


def validation_problems(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Each error's type, place, message and limits, without the value that was refused."""
    problems = []
    for error in errors:
        problem = {key: error[key] for key in _KEPT if key in error}
        problems.append(_encodable_tree(jsonable_encoder(problem)))
    return problems


async def refused_request(_request: Request, error: Exception) -> JSONResponse:
    """422 naming every problem of the request (FastAPI's status for them), logged nowhere:
    a client's mistake is no server event, and its body is the client's data."""
    assert isinstance(error, RequestValidationError)
    return JSONResponse({"detail": validation_problems(error.errors())}, status_code=422)
