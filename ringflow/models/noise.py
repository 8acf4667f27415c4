"""Standard normal noise for samplers: i.i.d. draws, or evenly spread (quasi-Monte Carlo).

"iid" is ``torch.randn``. "sobol" takes points of a scrambled Sobol sequence in [0, 1)^D (D =
the numel of one sample; Owen-style scrambling keeps each point uniform) through the Gaussian
inverse CDF, so a batch of n starting points covers N(0, I) more evenly than n independent
draws (Owen 1998; Joe & Kuo 2008 direction numbers, as torch's SobolEngine uses). Where each
sample lands is still the model's decision: only the starting noise is spread.

Shards of one draw: rank r takes points [offset, offset + n) of the same sequence, so the
ranks' samples together are the first n * ranks points, as evenly spread as one draw of that size.

    z = standard_normal((2000, 2), kind="sobol", seed=3)                   # (2000, 2)
    z = standard_normal((500, 2), kind="sobol", seed=3, offset=500)        # rank 1 of 4
"""
import math

import torch

NOISE_KINDS = ("iid", "sobol")
SOBOL_MAX_DIM = torch.quasirandom.SobolEngine.MAXDIM
# keep ndtri finite: a scrambled point is almost never exactly 0, but one would map to -inf
_EDGE = 2.0 ** -40


def standard_normal(shape, *, kind="iid", generator=None, seed=0, offset=0, device=None,
                    dtype=torch.float32):
    """N(0, 1) noise of ``shape`` (n, ...): "iid" draws from ``generator``; "sobol" uses
    points [offset, offset + n) of the scrambled Sobol sequence chosen by ``seed``."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
    shape = tuple(shape)
    if len(shape) < 1 or any(s < 0 for s in shape):
        raise ValueError(f"noise shape must be (n, ...) with sizes >= 0, got {shape}")
    if kind == "iid":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return _sobol_normal(shape, seed, offset).to(device=device, dtype=dtype)


def _sobol_normal(shape, seed, offset):
    """(n, ...) float64: Sobol points [offset, offset + n) in D = numel of (...) dimensions."""
    dim = math.prod(shape[1:])
    if not 1 <= dim <= SOBOL_MAX_DIM:
        raise ValueError(f"sobol noise needs 1 to {SOBOL_MAX_DIM} numbers per sample, got "
                         f"{dim} for shape {shape}; use kind='iid' for larger samples")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if shape[0] == 0:                                  # SobolEngine.draw(0) fails
        return torch.empty(shape, dtype=torch.float64)
    engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed)
    if offset:
        engine.fast_forward(offset)
    u = engine.draw(shape[0], dtype=torch.float64).clamp(_EDGE, 1 - _EDGE)   # (n, D)
    return torch.special.ndtri(u).reshape(shape)
