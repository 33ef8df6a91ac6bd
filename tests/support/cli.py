"""Running the real `tessera` command in its own process, as an operator does, with settings
given by the test alone: variables that start with one of ``not_inherited`` are not passed on
from the test run's environment."""

from __future__ import annotations

import os
import subprocess
import sys


def run_tessera(
    env: dict[str, str],
    *arguments: str,
    not_inherited: tuple[str, ...] = ("TESSERA_",),
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(not_inherited)}
    return subprocess.run(
        [sys.executable, "-m", "tessera", *arguments],
        # Wide enough that Rich does not wrap the lines the tests look for.
        env={**clean, "COLUMNS": "250", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
