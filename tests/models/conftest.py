"""Shared fixtures for tests/models; the closed-form oracles live in oracles.py."""
import pytest
import torch

torch.set_num_threads(1)                       # tiny ops; the 2 cores are shared


@pytest.fixture
def gaussian():
    """A 2D Gaussian with correlated, unequal variances: (mu (2,), cov (2, 2)), float64."""
    mu = torch.tensor([0.7, -0.4], dtype=torch.float64)
    cov = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
    return mu, cov
