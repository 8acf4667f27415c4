"""Skip, saying what to install, the tests this machine cannot run: ``mpi`` without mpirun or
mpi4py, ``gpu`` without a CUDA device. The markers are registered in pytest.ini."""
import pytest

from tests.launchers import mpi_missing


def gpu_missing() -> str | None:
    import torch
    return None if torch.cuda.is_available() else "no CUDA device (needs a GPU machine)"


MISSING = {"mpi": mpi_missing, "gpu": gpu_missing}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, missing in MISSING.items():
        why = missing() if item.get_closest_marker(marker) else None
        if why:
            pytest.skip(why)
