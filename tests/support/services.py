"""A real service a test needs cannot be reached.

On a developer's machine the test is skipped with one loud line naming the service and the
error (start it with `bash scripts/services up`). Where the services are required —
`scripts/test`, and so CI, sets TESSERA_REQUIRE_SERVICES=1 — the test fails instead: a service
that cannot start must never turn into a green run that tested nothing.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRED = "TESSERA_REQUIRE_SERVICES"


def service_missing(reason: str) -> NoReturn:
    if os.environ.get(REQUIRED) == "1":
        pytest.fail(f"a required service is missing ({REQUIRED}=1): {reason}", pytrace=False)
    pytest.skip(reason)
