"""Cached configuration is changed through the directory that caches it (storage/write_through.py),
so no endpoint can store a change and forget to drop the cached copy: the API never saves or
deletes through a configuration store directly. Checked on the source of tessera/api."""

from __future__ import annotations

import ast
from pathlib import Path

API = Path(__file__).resolve().parents[2] / "tessera" / "api"

# The configuration the ingest path caches (each has a directory on the runtime).
CACHED = frozenset(
    {"sources", "consent_types", "destinations", "rules", "workflows", "segments", "processing"}
)


def _dotted(node: ast.expr) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _direct_writes(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in ("save", "delete"):
            continue
        receiver = _dotted(node.func.value).split(".")
        through_storage = "storage" in receiver[:-1] and receiver[-1] in CACHED
        through_a_store = receiver[-1] == "store"
        if through_storage or through_a_store:
            found.append(f"{filename}:{node.lineno}: {'.'.join(receiver)}.{node.func.attr}")
    return found


def test_the_api_writes_cached_configuration_through_its_directory() -> None:
    files = sorted(API.glob("*.py"))
    assert len(files) > 10  # the walk found the API
    found = [w for path in files for w in _direct_writes(path.read_text(), path.name)]
    assert not found, "save or delete through the directory instead:\n" + "\n".join(found)


def test_the_check_sees_a_direct_write() -> None:
    written = (
        "async def f(runtime):\n"
        "    await runtime.storage.rules.save(rule)\n"
        "    await runtime.segments.store.delete('t', 'x')\n"
        "    await runtime.automation.rules.save(rule)\n"
    )
    assert _direct_writes(written, "probe.py") == [
        "probe.py:2: runtime.storage.rules.save",
        "probe.py:3: runtime.segments.store.delete",
    ]
