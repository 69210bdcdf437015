"""The core's packages are layers: a module imports only from its own layer or lower ones,
and no two modules import each other, however indirectly.

Imports only a type checker reads (under ``if TYPE_CHECKING:``) are left out; imports inside
functions count, as they run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1]
ROOT = CORE.parents[1]

# Lowest first. A module not named here belongs to the site layer on top (views, admin, URLs,
# middleware, management commands, housekeeping tasks).
LAYERS = [
    ("utilities", ["adit.core.validators", "adit.core.encryption", "adit.core.spreadsheets",
                   "adit.core.sheet_reader", "adit.core.sections",
                   "adit.core.study_pages", "adit.core.admin_panels"]),
    ("DICOM protocol", ["adit.core.dicom"]),
    ("data and demo PACS", ["adit.core.models", "adit.core.access", "adit.core.association_slots",
                            "adit.core.demo"]),
    ("job engine", ["adit.core.jobs"]),
    ("transfer pipeline", ["adit.core.transfer"]),
]  # fmt: skip
SITE = len(LAYERS)


def _layer(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(f"{prefix}.") for prefix in prefixes):
            return rank
    return SITE


def _layer_name(rank: int) -> str:
    return LAYERS[rank][0] if rank < SITE else "site"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _core_modules() -> dict[str, Path]:
    modules = {}
    for path in CORE.rglob("*.py"):
        relative = path.relative_to(CORE).parts
        if relative[0] in ("tests", "migrations"):
            continue
        modules[_module_name(path)] = path
    return modules


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """The core modules ``module`` imports when it runs."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def resolve(name: str) -> None:
        # "from adit.core.jobs import models" names a module; "from adit.core.models import
        # DicomNode" names a module's attribute: the longest known module prefix counts.
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    def visit(node: ast.AST) -> None:
        if _is_type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                resolve(f"{base}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


@pytest.fixture(scope="module")
def import_graph() -> dict[str, set[str]]:
    modules = _core_modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def test_no_module_imports_a_higher_layer(import_graph):
    upward = [
        f"{module} ({_layer_name(_layer(module))}) imports {imported} "
        f"({_layer_name(_layer(imported))})"
        for module, imports in sorted(import_graph.items())
        for imported in sorted(imports)
        if _layer(imported) > _layer(module)
    ]
    assert upward == []


def test_no_import_circles(import_graph):
    """Tarjan's strongly connected components: any with two modules or more is a circle."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def connect(module: str) -> None:
        index[module] = lowlink[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in import_graph.get(module, ()):
            if imported not in index:
                connect(imported)
                lowlink[module] = min(lowlink[module], lowlink[imported])
            elif imported in on_stack:
                lowlink[module] = min(lowlink[module], index[imported])
        if lowlink[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(import_graph):
        if module not in index:
            connect(module)
    assert circles == []


def test_the_graph_sees_the_imports_it_must_see(import_graph):
    """The checks above are only as good as the graph: known edges must be in it."""
    assert "adit.core.dicom.operator" in import_graph["adit.core.transfer.pipeline"]
    assert "adit.core.jobs.queue" in import_graph["adit.core.jobs.models"]
    assert "adit.core.validators" in import_graph["adit.core.dicom.query"]
    # A function-level import counts; one for type checkers only does not.
    assert "adit.core.models" in import_graph["adit.core.tasks"]
    assert "adit.core.jobs.processing" not in import_graph["adit.core.transfer.destinations"]
