"""The layering in DESIGN.md, enforced: nothing imports upward or in a circle, models/ imports nothing
distributed."""
import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "ringflow"
FORBIDDEN_IN_MODELS = ("torch.distributed", "mpi4py", "ringflow.parallel", "ringflow.collectives",
                       "ringflow.transport", "ringflow.backend", "ringflow.runtime")
# layer -> ringflow modules it must not import (anything above it; runtime is the top of the stack)
UPWARD = {
    "transport": ("ringflow.collectives", "ringflow.parallel", "ringflow.backend", "ringflow.models",
                  "ringflow.train", "ringflow.runtime"),
    "collectives": ("ringflow.parallel", "ringflow.backend", "ringflow.models", "ringflow.train",
                    "ringflow.bench", "ringflow.runtime"),
    "parallel": ("ringflow.backend", "ringflow.models", "ringflow.train", "ringflow.bench",
                 "ringflow.runtime"),
    "backend": ("ringflow.parallel", "ringflow.models", "ringflow.train", "ringflow.bench",
                "ringflow.runtime"),
}


def imported_modules(path: Path, pkg: Path = PKG) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved), including
    imports inside functions: a lazy import still has to succeed, so it still makes an arrow."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(pkg.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((PKG / folder).rglob("*.py")):
        for name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(PKG.parent)} imports {name}")
    return bad


def module_name(path: Path, pkg: Path = PKG) -> str:
    parts = path.relative_to(pkg.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    """module -> the package's modules it imports, with the packages above them (importing
    a.b.c runs a/__init__ and a/b/__init__ first). An arrow to one of the module's own parent
    packages is left out: Python runs those before the module anyway, so it is no cycle."""
    paths = {module_name(p, pkg): p for p in sorted(pkg.rglob("*.py"))}
    graph = {}
    for name, path in paths.items():
        targets = set()
        for imported in imported_modules(path, pkg):
            while imported:
                if imported in paths and imported != name and not name.startswith(imported + "."):
                    targets.add(imported)
                imported = imported.rpartition(".")[0]     # pkg.mod.Class -> pkg.mod -> pkg
        graph[name] = targets
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) through each group of modules that import each other."""
    cycles, done = [], set()
    for start in sorted(graph):
        path, on_path = _cycle_from(start, graph, done)
        if path:
            cycles.append(path)
            done.update(on_path)
    return cycles


def _cycle_from(start: str, graph: dict[str, set[str]], done: set[str]):
    """Depth-first from ``start``: the first cycle back to a module on the current path."""
    path, index, stack, seen = [], {}, [(start, iter(sorted(graph[start])))], {start}
    path.append(start)
    index[start] = 0
    while stack:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            del index[path.pop()]
        elif child in index:
            cycle = path[index[child]:] + [child]
            return cycle, set(cycle)
        elif child not in seen and child not in done:
            seen.add(child)
            index[child] = len(path)
            path.append(child)
            stack.append((child, iter(sorted(graph.get(child, ())))))
    return None, set()


def test_models_import_nothing_distributed():
    assert (PKG / "models").is_dir()
    assert violations("models", FORBIDDEN_IN_MODELS) == []


def test_no_layer_imports_upward():
    for layer, forbidden in UPWARD.items():
        assert violations(layer, forbidden) == [], layer


def test_scanner_sees_a_violation(tmp_path):
    # The check itself must be able to fail: a file importing torch.distributed is caught.
    f = PKG / "models" / "_scanner_probe_tmp.py"
    f.write_text("import torch.distributed as dist\nfrom ..collectives import all_reduce\n")
    try:
        found = violations("models", FORBIDDEN_IN_MODELS)
    finally:
        f.unlink()
    assert any("torch.distributed" in v for v in found)
    assert any("ringflow.collectives" in v for v in found)


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_check_sees_a_cycle(tmp_path):
    # The check itself must be able to fail: two modules importing each other, one of them
    # only inside a function, are reported; a module importing its own package is not a cycle.
    pkg = tmp_path / "ringflow"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub import a\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from .. import sub\nfrom .b import helper\n")
    (pkg / "sub" / "b.py").write_text("def helper():\n    from . import a\n")
    assert import_cycles(import_graph(pkg)) == [["ringflow.sub.a", "ringflow.sub.b", "ringflow.sub.a"]]


def test_importing_ringflow_starts_nothing():
    code = ("import sys, ringflow, ringflow.models; "
            "assert not ringflow.is_initialized(); "
            "bad = [m for m in ('mpi4py', 'ringflow.parallel', 'ringflow.transport.torch_dist') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
