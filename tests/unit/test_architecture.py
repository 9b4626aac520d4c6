"""The package's import graph: no cycles between modules or packages, every import pointing down
the layers the README draws, and the command line's parser free of torch.

Every ``import`` statement counts, wherever it stands (inside a function, under
``TYPE_CHECKING``): an import moved into a function to hide a cycle is still a cycle here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import snugtune

SRC = Path(snugtune.__file__).parent
PACKAGE = "snugtune"

# The README's drawing, top to bottom: a package imports only its own layer or those below.
LAYERS = [
    {"cli", "__main__"},
    {"recipe", "export"},
    {"infer"},
    {"planner", "report"},
    {"memory", "models", "data"},
    {"step"},
    {"rundir", "store", "results", "config", "errors", "units", "_version"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The module an import of ``name`` loads last (a package's ``__init__`` or a module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                target = _resolve(name)
                if target and target != module:
                    out.add(target)
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_module_imports_itself_through_others() -> None:
    assert _cycles(GRAPH) == []


def test_no_package_cycles_and_every_import_points_down_the_layers() -> None:
    packages: dict[str, set[str]] = defaultdict(set)
    wrong = []
    for module, targets in GRAPH.items():
        src = _package(module)
        if src == "__init__":  # the API's lazy table names every layer
            continue
        for target in targets:
            dst = _package(target)
            if dst == "__init__":
                wrong.append(f"{module} imports the package root")
                continue
            if dst != src:
                packages[src].add(dst)
                if LAYER_OF[dst] < LAYER_OF[src]:
                    wrong.append(f"{module} -> {target}: {src} sits below {dst}")
    assert set(LAYER_OF) >= {_package(m) for m in MODULES} - {"__init__"}, "a package has no layer"
    assert wrong == []
    assert _cycles(packages) == []


def test_the_graph_sees_what_it_should() -> None:
    """Guard against a walk that silently finds nothing."""
    assert "snugtune.recipe.finetune" in GRAPH and len(GRAPH) > 60
    assert "snugtune.step.loop" in GRAPH["snugtune.recipe.finetune"] or \
        "snugtune.step" in GRAPH["snugtune.recipe.finetune"]
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_function_shadows_a_package() -> None:
    """``snugtune.train`` (and the rest of the API) are functions; no package has their names,
    and no package exports a name that is one of its own submodules."""
    packages = {_package(m) for m in MODULES}
    assert not packages & {"train", "plan", "evaluate", "predict", "resume"}
    import snugtune.recipe.finetune as finetune

    assert snugtune.train is finetune.train and callable(snugtune.plan)
    shadowed = []
    for module, path in MODULES.items():
        if path.name != "__init__.py" or module == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module != module:
                # a name bound from a submodule over the submodule of that name
                shadowed += [f"{module}.{a.asname or a.name}" for a in node.names
                             if f"{module}.{a.asname or a.name}" in MODULES]
    assert shadowed == []


def test_the_command_line_parser_does_not_import_torch() -> None:
    code = ("import sys\nfrom snugtune.cli.parser import build_parser\n"
            "build_parser().format_help()\nassert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
