"""Likelihoods in one currency: nats -> bits/dim, for flows and for the ODE models.

Flows have an exact log-density (``flows.Flow.log_prob``). DDIM's probability-flow ODE and the
rectified-flow ODE have one too, through the instantaneous change of variables
(Chen et al. 2018, Neural ODEs, thm. 1; Song et al. 2021, score SDE, eq. 39):

    dx/dt = f(x, t),   d log p(x_t)/dt = -div f(x_t, t)
    =>  log p_{t0}(x) = log p_{t1}(x_{t1}) + integral_{t0}^{t1} div f(x_t, t) dt

integrated here with fixed-step RK4 on the augmented state (x, integral). The divergence is
exact (one vector-Jacobian product per dimension) for small dimensions and Hutchinson's
estimator E_v[v^T (df/dx) v] with one Rademacher probe per sample, fixed along the path
(Grathwohl et al. 2019, FFJORD, sec. 3.1), otherwise.

Bits/dim of data quantised to ``levels`` values in [-1, 1]: uniform dequantization
(Theis et al. 2016) puts each grid value at the centre of a bin of width 2/(levels-1), and
-log2 P(k) <= (-log p(x + u) - D log(bin width)) / log 2, averaged per dimension.

    logp = ode_log_prob(lambda x, t: net(x, t), x, 0.0, 1.0, steps=50)   # x (B, D) -> (B,)
    bpd = bits_per_dim(logp, dim=64, levels=17).mean()
"""
import math

import torch


def dequantize(x, levels, generator=None):
    """x (any shape) on the grid {-1 + 2k/(levels-1)} -> x + uniform noise within its bin."""
    width = 2.0 / (levels - 1)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + (u - 0.5) * width


def bits_per_dim(log_prob, dim, levels=256):
    """Bits/dim of quantised data from the continuous log-density (nats) of dequantized x.

    log_prob (B,), dim = numbers per example, levels = grey levels per number -> (B,).
    """
    width = 2.0 / (levels - 1)
    return (-log_prob / dim - math.log(width)) / math.log(2.0)


def standard_normal_log_prob(z):
    """log N(z; 0, I) summed over all but the batch dim: (B, ...) -> (B,)."""
    z = z.flatten(1)
    return -0.5 * (z.pow(2).sum(-1) + z.shape[1] * math.log(2 * math.pi))


def divergence(fn, x, t, probe=None):
    """f = fn(x, t) and div_x f: x (B, ...) -> (f (B, ...), div (B,)), both detached.

    probe None: exact trace, one backward per dimension. probe (B, ...): Hutchinson v^T J v.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        f = fn(x, t)
        if probe is not None:
            vjp = torch.autograd.grad(f, x, probe)[0]
            return f.detach(), (vjp * probe).flatten(1).sum(-1)
        flat = f.flatten(1)
        div = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for i in range(flat.shape[1]):
            grad = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)[0]
            div = div + grad.flatten(1)[:, i]
    return f.detach(), div


def rademacher(like, generator=None):
    """+-1 entries with the shape/dtype/device of ``like``."""
    bits = torch.randint(0, 2, like.shape, generator=generator, device=like.device)
    return (2 * bits - 1).to(like.dtype)


def ode_log_prob(fn, x, t0, t1, *, steps=50, prior_log_prob=standard_normal_log_prob,
                 estimator="auto", generator=None, grid=None):
    """log p_{t0}(x) (B,) for the ODE dx/dt = fn(x, t) whose marginal at t1 is the prior.

    fn(x (B, ...), t (B,)) -> (B, ...); estimator "exact", "hutchinson" or "auto" (exact up to
    16 dimensions). ``grid`` (steps+1,) overrides the uniform time grid from t0 to t1.
    Returns the log-density in nats; the end point x_{t1} is not returned.
    """
    if estimator == "auto":
        estimator = "exact" if x[0].numel() <= 16 else "hutchinson"
    if estimator not in ("exact", "hutchinson"):
        raise ValueError(f"estimator must be 'exact', 'hutchinson' or 'auto', got {estimator!r}")
    probe = rademacher(x, generator) if estimator == "hutchinson" else None
    grid = torch.linspace(t0, t1, steps + 1, dtype=torch.float64) if grid is None else grid

    def aug(xs, t):                                                 # -> (dx/dt, div)
        return divergence(fn, xs, torch.full((x.shape[0],), t, device=x.device), probe)

    xs, integral = x.detach(), torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    for a, b in zip(grid[:-1].tolist(), grid[1:].tolist()):        # classic RK4 steps
        h = b - a
        k1, d1 = aug(xs, a)
        k2, d2 = aug(xs + 0.5 * h * k1, a + 0.5 * h)
        k3, d3 = aug(xs + 0.5 * h * k2, a + 0.5 * h)
        k4, d4 = aug(xs + h * k3, b)
        xs = xs + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        integral = integral + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    return prior_log_prob(xs) + integral


class FlowLikelihood:
    """Maximum-likelihood objective for normalizing flows (``flows.NICE`` / ``flows.RealNVP``).

    ``loss(flow, x0)`` is the mean NLL in nats per dimension of x0, dequantized first when
    ``levels`` is set (quantised images); ``sample`` inverts prior draws. Flows are
    unconditional: y and cfg_scale are accepted for a uniform interface and ignored.
    """

    def __init__(self, levels=None):
        self.levels = levels

    def loss(self, flow, x0, y=None, generator=None):
        """x0 (B, *event_shape) -> scalar mean NLL per dimension (nats)."""
        x = dequantize(x0, self.levels, generator) if self.levels else x0
        return flow.nll(x) / x[0].numel()

    @torch.no_grad()
    def sample(self, flow, shape, *, steps=None, y=None, cfg_scale=1.0, generator=None,
               device=None):
        """shape = (n, *event_shape) -> samples by inverting z ~ N(0, I); steps is unused."""
        if tuple(shape[1:]) != flow.event_shape:
            raise ValueError(f"this flow samples (n, {flow.event_shape}), asked for {tuple(shape)}")
        return flow.sample(shape[0], generator=generator, device=device)

    def log_likelihood(self, flow, x, y=None, **ode_options):
        """Exact log-density (B,) in nats of x (B, *event_shape); ODE options are ignored."""
        return flow.log_prob(x)
