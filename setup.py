"""ringflow: distributed training built on hand-written ring collectives."""
from setuptools import find_packages, setup

setup(
    name="ringflow",
    version="0.1.0",
    description="Ring collectives over torch.distributed, MPI, shared memory and threads; "
                "data-parallel wrappers; diffusion, flow and DiT workloads",
    packages=find_packages(include=["ringflow", "ringflow.*"]),
    python_requires=">=3.10",
    # torch is a loose lower bound: users bring their own (CUDA) build; the Makefile pins the tested one.
    install_requires=["torch>=2.1", "numpy", "safetensors", "tqdm", "matplotlib", "pyyaml",
                      "scikit-learn", "mlxtend"],
    extras_require={
        "mpi": ["mpi4py>=3.1", "openmpi"],
        "test": ["pytest>=7", "pytest-timeout"],
        "dev": ["pytest>=7", "pytest-timeout"],
        # torch's own distributed test suite (benchmarks/backend/torch_suite.py): its test
        # utilities import expecttest; not part of `make test`'s install.
        "torchsuite": ["pytest>=7", "pytest-timeout", "expecttest"],
    },
    entry_points={"console_scripts": ["ringflow-bench=ringflow.bench:main",
                                      "ringflow-train=ringflow.train.loop:main"]},
)
