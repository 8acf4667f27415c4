"""ringflow: distributed training built on hand-written ring collectives.

    import ringflow
    from ringflow import collectives as rc
    comm = ringflow.init()              # torchrun, mpirun, Slurm, or plain python (world of 1)
    rc.all_reduce(tensor)

Importing ringflow starts nothing (it registers the torch.distributed backend "ringflow");
``init()`` does.
"""
from . import backend as _backend  # noqa: F401 - registers torch.distributed's "ringflow"
from .runtime import init, is_initialized, shutdown, world

__version__ = "0.1.0"
__all__ = ["init", "world", "shutdown", "is_initialized", "collectives", "parallel", "models"]


def __getattr__(name):
    # Subpackages load on first use, so `import ringflow` stays cheap and models/ stays apart.
    if name in ("collectives", "parallel", "models", "transport"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ringflow' has no attribute {name!r}")
