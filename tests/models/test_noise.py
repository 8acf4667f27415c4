"""The samplers' starting noise (ringflow.models.noise): i.i.d. and scrambled Sobol, N(0, 1)."""
import math

import pytest
import torch

from ringflow.models.noise import SOBOL_MAX_DIM, standard_normal
from ringflow.models.rectified_flow import RectifiedFlow


def ks_statistic(values):
    """Kolmogorov-Smirnov distance of a 1D sample to N(0, 1)."""
    v = values.double().sort().values
    n = len(v)
    cdf = torch.special.ndtr(v)
    above = torch.arange(1, n + 1, dtype=torch.float64) / n - cdf
    below = cdf - torch.arange(n, dtype=torch.float64) / n
    return max(above.max().item(), below.max().item())


@pytest.mark.parametrize("kind", ["iid", "sobol"])
def test_noise_is_standard_normal(kind):
    z = standard_normal((4096, 3), kind=kind, generator=torch.Generator().manual_seed(0), seed=0)
    assert z.dtype == torch.float32 and torch.isfinite(z).all()
    # 1.63 / sqrt(n): the KS test's 1 % critical value; mean/std within 4 standard errors
    for column in z.T:
        assert ks_statistic(column) < 1.63 / math.sqrt(len(column))
        assert abs(column.mean().item()) < 4 / math.sqrt(len(column))
        assert abs(column.std().item() - 1) < 4 / math.sqrt(2 * len(column))
    assert torch.corrcoef(z.T.double()).sub(torch.eye(3)).abs().max() < 4 / math.sqrt(len(z))


def test_sobol_is_more_even_than_iid():
    n = 4096
    sobol = standard_normal((n, 2), kind="sobol", seed=1)
    iid = standard_normal((n, 2), generator=torch.Generator().manual_seed(1))
    assert ks_statistic(sobol[:, 0]) < 0.2 * ks_statistic(iid[:, 0])
    # a (0, m, 2)-net: every one of 64 x 64 equal-probability cells holds exactly one point
    cells = (torch.special.ndtr(sobol.double()) * 64).floor().long()
    counts = torch.bincount(cells[:, 0] * 64 + cells[:, 1], minlength=64 * 64)
    assert counts.min() == 1 and counts.max() == 1
    iid_cells = (torch.special.ndtr(iid.double()) * 64).floor().long()
    assert torch.bincount(iid_cells[:, 0] * 64 + iid_cells[:, 1]).max() > 1


@pytest.mark.parametrize("kind", ["iid", "sobol"])
def test_deterministic_per_seed(kind):
    def draw(seed):
        return standard_normal((100, 2), kind=kind, seed=seed,
                               generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


@pytest.mark.parametrize("n", [0, 1, 7, 1000, 1023])
@pytest.mark.parametrize("shape", [(), (2,), (1, 8, 8), (4, 7, 7)])
@pytest.mark.parametrize("kind", ["iid", "sobol"])
def test_any_count_and_shape(kind, n, shape):
    z = standard_normal((n, *shape), kind=kind, dtype=torch.float64)
    assert z.shape == (n, *shape) and z.dtype == torch.float64
    assert torch.isfinite(z).all()


def test_sobol_shards_join_into_one_draw():
    whole = standard_normal((1000, 2), kind="sobol", seed=5)
    shards = [standard_normal((250, 2), kind="sobol", seed=5, offset=250 * r) for r in range(4)]
    assert torch.equal(torch.cat(shards), whole)


def test_rectified_flow_starts_from_sobol_noise():
    z = standard_normal((64, 2), kind="sobol", seed=0)
    net = lambda x, t, y=None: torch.zeros_like(x)               # v = 0: x stays at the noise
    assert torch.equal(RectifiedFlow().sample(net, (64, 2), steps=3, noise=z), z)


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="noise kind must be one of"):
        standard_normal((4, 2), kind="halton")
    with pytest.raises(ValueError, match="sizes >= 0"):
        standard_normal((-1, 2))
    with pytest.raises(ValueError, match="shape must be"):
        standard_normal(())
    with pytest.raises(ValueError, match="use kind='iid'"):
        standard_normal((2, SOBOL_MAX_DIM + 1), kind="sobol")
    with pytest.raises(ValueError, match="offset must be >= 0"):
        standard_normal((2, 2), kind="sobol", offset=-1)
