"""models/ imports nothing distributed; data.py imports only torch, numpy, sklearn, mlxtend."""
import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2] / "ringflow"
FORBIDDEN = ("torch.distributed", "mpi4py", "ringflow.parallel", "ringflow.collectives",
             "ringflow.transport")


def imported_modules(path):
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
    return names


def test_models_import_nothing_distributed():
    files = sorted((ROOT / "models").glob("*.py"))
    assert len(files) >= 10
    for path in files:
        for name in imported_modules(path):
            assert not name.startswith("."), f"{path.name}: use absolute imports, got {name}"
            assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"


def test_data_imports_only_allowed_packages():
    allowed = {"torch", "numpy", "sklearn", "mlxtend"} | set(sys.stdlib_module_names)
    for name in imported_modules(ROOT / "data.py"):
        assert name.split(".")[0] in allowed, f"data.py imports {name}"


def test_import_models_does_not_load_distributed_ringflow():
    code = ("import sys, ringflow.models, ringflow.data; "
            "bad = [m for m in sys.modules if m.startswith(('ringflow.parallel', "
            "'ringflow.collectives', 'ringflow.transport', 'mpi4py'))]; print(bad); "
            "assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT.parent)
