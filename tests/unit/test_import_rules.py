"""The package layering of docs/architecture.md ("Packages and what may import what"), checked
on the source: every import of a `tessera` module, wherever it sits (module level, inside a
function, under TYPE_CHECKING), must point to a package in a lower layer, so dependencies run
one way and no two packages can form a cycle. Storage backends never import one another, so
`storage/factory.py` stays the one place that knows which backends exist; nor do the ingest
queue's (`workers/queue_factory.py` chooses among them).

A new package must be given a layer here (the test names it otherwise).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "tessera"

# Bottom first. A package may import the packages of lower layers, never its own layer's
# others nor anything above.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors"}),
    frozenset({"settings", "model", "query"}),
    frozenset({"logs", "outbound", "settings_doc", "core"}),
    frozenset({"storage"}),
    frozenset({"security", "identity", "destinations", "queue"}),
    frozenset({"segments", "workflow"}),
    frozenset({"pipeline"}),
    frozenset({"collect", "workers"}),
    frozenset({"ops", "doctor"}),
    frozenset({"runtime"}),
    frozenset({"api"}),
    frozenset({"serving"}),
    frozenset({"cli"}),
    frozenset({"__main__"}),
)
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}

# The backends under storage/ and under queue/: each talks to one engine and knows no other
# of its package. mysql holds the server flavour (engine, Alembic migrations) of the
# configuration stores in sql.
BACKENDS = {
    "storage": frozenset({"elastic", "mysql", "redis", "sql", "sqlite"}),
    "queue": frozenset({"embedded", "kafka", "pulsar", "redis"}),
}
BACKEND_ALLOWED = {("mysql", "sql")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every absolute import of a tessera module in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tessera."):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            assert node.level == 0, f"{path}:{node.lineno}: relative import (use tessera.…)"
            if node.module.startswith("tessera."):
                yield node.lineno, node.module


def _edges() -> Iterator[tuple[str, int, str, str]]:
    """(file, line, importing module, imported module) over every module of the package."""
    for path in sorted(ROOT.rglob("*.py")):
        module = _module_name(path)
        for line, imported in _imports(path):
            yield str(path.relative_to(ROOT.parent)), line, module, imported


def _part(module: str, index: int) -> str | None:
    parts = module.split(".")
    return parts[index] if len(parts) > index else None


EDGES = list(_edges())


def test_the_source_was_read() -> None:
    # Guards the tests below against passing on an empty walk (a moved ROOT, a parse change).
    assert len(EDGES) > 500
    assert {_part(module, 1) for _, _, module, _ in EDGES} >= {"storage", "pipeline", "api"}


def test_every_package_has_a_layer() -> None:
    packages = {_part(m, 1) for _, _, module, imported in EDGES for m in (module, imported)}
    missing = sorted(p for p in packages if p is not None and p not in LAYER_OF)
    assert not missing, f"give these packages a layer in {__name__}.LAYERS: {missing}"


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{where}:{line}: {module} imports {imported}"
        for where, line, module, imported in EDGES
        if (source := _part(module, 1)) != (target := _part(imported, 1))
        and source in LAYER_OF
        and target in LAYER_OF
        and LAYER_OF[target] >= LAYER_OF[source]
    ]
    assert not upward, "imports against the layering (docs/architecture.md):\n" + "\n".join(upward)


@pytest.mark.parametrize("package", sorted(BACKENDS))
def test_backends_do_not_import_one_another(package: str) -> None:
    backends = BACKENDS[package]
    crossing = [
        f"{where}:{line}: {module} imports {imported}"
        for where, line, module, imported in EDGES
        if _part(module, 1) == package == _part(imported, 1)
        and (source := _part(module, 2)) in backends
        and (target := _part(imported, 2)) in backends
        and source != target
        and (source, target) not in BACKEND_ALLOWED
    ]
    assert not crossing, "\n".join(crossing)


@pytest.mark.parametrize(
    ("module", "imported"),
    [("tessera.storage.factory", "tessera.pipeline.ingest"), ("tessera.core.locks", "tessera.api")],
)
def test_the_rule_catches_an_upward_import(module: str, imported: str) -> None:
    # The check itself, on made-up edges: an import from storage or core upwards is refused.
    source, target = _part(module, 1), _part(imported, 1)
    assert source is not None and target is not None
    assert LAYER_OF[target] >= LAYER_OF[source]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that reach one another through imports (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_reaches_itself_through_its_imports() -> None:
    # Stricter than the layers: within one package too, and TYPE_CHECKING imports included
    # (a consumer that needs a few fields of its queue declares them as a Protocol instead).
    modules: dict[str, set[str]] = {}
    for _, _, module, imported in EDGES:
        if imported != module and not module.startswith(imported + "."):
            modules.setdefault(module, set()).add(imported)
    assert _cycles(modules) == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
