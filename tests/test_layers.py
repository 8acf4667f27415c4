"""The layering in DESIGN.md, enforced: nothing imports upward, models/ imports nothing distributed."""
import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "ringflow"
FORBIDDEN_IN_MODELS = ("torch.distributed", "mpi4py", "ringflow.parallel", "ringflow.collectives",
                       "ringflow.transport", "ringflow.runtime")
# layer -> ringflow modules it must not import (anything above it)
UPWARD = {
    "transport": ("ringflow.collectives", "ringflow.parallel", "ringflow.models", "ringflow.train"),
    "collectives": ("ringflow.parallel", "ringflow.models", "ringflow.train", "ringflow.bench"),
    "parallel": ("ringflow.models", "ringflow.train", "ringflow.bench"),
}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
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


def test_importing_ringflow_starts_nothing():
    code = ("import sys, ringflow, ringflow.models; "
            "assert not ringflow.is_initialized(); "
            "bad = [m for m in ('mpi4py', 'ringflow.parallel', 'ringflow.transport.torch_dist') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
