"""The import layers of ``fdrl`` and ``fdrl_studies``: every module imports only from its own
layer or a lower one, and no module reaches itself through imports (no circle).

:data:`LAYERS` is the one list of the layers, lowest first. Imports are read with ``ast``, at
module level and inside functions alike (a function-level import is a dependency too, only a
later one), ``if TYPE_CHECKING:`` imports included. Importing ``a.b.c`` also runs the package
``a.b``'s ``__init__``, so that counts as a dependency on the package too. A new module must be
placed in a layer here before the suite passes.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("fdrl", "fdrl_studies")

#: lowest first. ``name.*`` is the package ``name`` and everything in it; other names are one
#: module. The root package ``fdrl`` only holds the version and names it imports on first use.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("fdrl", "fdrl.seeding", "fdrl.outputs", "fdrl.progress", "fdrl.table_paths", "fdrl.pairings",
                    "fdrl.schema", "fdrl.components", "fdrl.report_text", "fdrl.smoothing", "fdrl.image_io", "fdrl.presets.*",
                    "fdrl.checkpoint", "fdrl.native.*")),
    ("settings and networks", ("fdrl.config", "fdrl.objectives", "fdrl.nets.*", "fdrl.guard")),
    ("data and priors", ("fdrl.data.*", "fdrl.priors.*")),
    ("flow", ("fdrl.flow_setup", "fdrl.flow", "fdrl.route_table")),
    ("model and its products", ("fdrl.model", "fdrl.rundir", "fdrl.classifier", "fdrl.guidance", "fdrl.plots",
                                "fdrl.sample_files")),
    ("evaluation", ("fdrl.evaluate.*",)),
    ("training", ("fdrl.train", "fdrl.distributed", "fdrl.fitting")),
    ("experiments", ("fdrl_studies.*",)),
    ("command line", ("fdrl.cli.*",)),
]


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (at ``line``; ``explicit`` False for the package
    ``__init__`` an import of a submodule runs first; ``module_level`` False inside a function
    or a conditional)."""

    source: str
    target: str
    line: int
    explicit: bool = True
    module_level: bool = True


def modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for every package of :data:`PACKAGES` under ``root``."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_edges(root: Path) -> list[Edge]:
    """Every import of one of :data:`PACKAGES` in the modules under ``root``."""
    known = modules(root)
    edges = []
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                # ``from a import b`` imports the module ``a.b`` when there is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] not in PACKAGES or target == name:
                    continue
                edges.append(Edge(name, target, node.lineno, module_level=id(node) in top))
                parts = target.split(".")
                for i in range(2, len(parts)):
                    parent = ".".join(parts[:i])
                    if parent in known and not name.startswith(parent + ".") and parent != name:
                        edges.append(Edge(name, parent, node.lineno, False, id(node) in top))
    return edges


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> int | None:
    """The index of ``module``'s layer (the most specific entry that names it), or None."""
    best, depth = None, -1
    for index, (_, entries) in enumerate(layers):
        for entry in entries:
            package = entry[:-2] if entry.endswith(".*") else None
            if module == entry or (package and (module == package or module.startswith(package + "."))):
                if len(entry) > depth:
                    best, depth = index, len(entry)
    return best


def upward_imports(edges: list[Edge], layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> list[str]:
    """One line per import of a higher layer."""
    bad = []
    for e in edges:
        low, high = layer_of(e.source, layers), layer_of(e.target, layers)
        if low is not None and high is not None and high > low:
            bad.append(f"{e.source}:{e.line} imports {e.target} ({layers[low][0]} -> {layers[high][0]})")
    return bad


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Import circles among explicit imports (a package ``__init__`` importing its own modules
    and their implied import of it is no circle), each as the modules around it."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if e.explicit:
            graph.setdefault(e.source, set()).add(e.target)
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_edges(SRC)


def test_every_module_has_a_layer():
    unplaced = [name for name in modules(SRC) if layer_of(name) is None]
    assert not unplaced, f"place these modules in tests/test_layers.py LAYERS: {unplaced}"


def test_no_module_imports_a_higher_layer(edges):
    assert upward_imports(edges) == []


def test_no_import_circle(edges):
    assert cycles(edges) == []


def test_the_library_reaches_the_experiments_only_inside_a_command(edges):
    """fdrl_studies sits above the library; only ``fdrl.cli`` may reach it, inside the command
    that runs a study (so no other command pays for importing it)."""
    to_studies = [e for e in edges if e.target.startswith("fdrl_studies") and e.source.startswith("fdrl.")]
    assert to_studies and all(e.source.startswith("fdrl.cli.") and not e.module_level for e in to_studies)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_check_flags_an_upward_import_inside_a_function(tmp_path):
    root = _tree(tmp_path, {
        "fdrl/__init__.py": "",
        "fdrl/low.py": "def f():\n    from fdrl import high\n    return high\n",
        "fdrl/high.py": "from fdrl.low import f\n",
        "fdrl/evaluate/__init__.py": "from fdrl.evaluate.score import s\n",
        "fdrl/evaluate/score.py": "from . import other\ns = 1\n",
        "fdrl/evaluate/other.py": "",
    })
    layers = [("low", ("fdrl", "fdrl.low")), ("high", ("fdrl.high", "fdrl.evaluate.*"))]
    edges = import_edges(root)
    assert upward_imports(edges, layers) == ["fdrl.low:2 imports fdrl.high (low -> high)"]
    assert cycles(edges) == [["fdrl.high", "fdrl.low", "fdrl.high"]]
    # a package importing its own modules is no circle, and relative imports resolve
    assert Edge("fdrl.evaluate.score", "fdrl.evaluate.other", 1) in edges
    assert not next(e for e in edges if e.source == "fdrl.low").module_level
    assert layer_of("fdrl.evaluate.score", layers) == 1 and layer_of("fdrl.nope", layers) is None


def test_importing_a_submodule_depends_on_its_package(tmp_path):
    """``fdrl.data.x`` runs ``fdrl/data/__init__.py`` first: a low module importing a lower
    package's submodule is flagged when that package's ``__init__`` sits higher."""
    root = _tree(tmp_path, {
        "fdrl/__init__.py": "",
        "fdrl/low.py": "import fdrl.pkg.leaf\n",
        "fdrl/pkg/__init__.py": "",
        "fdrl/pkg/leaf.py": "",
    })
    layers = [("low", ("fdrl", "fdrl.low", "fdrl.pkg.leaf")), ("high", ("fdrl.pkg",))]
    assert upward_imports(import_edges(root), layers) == ["fdrl.low:1 imports fdrl.pkg (low -> high)"]
