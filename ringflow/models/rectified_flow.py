"""Rectified flow in the SD3 / diffusers convention (Liu et al. 2022; Esser et al. 2024,
arXiv:2403.03206).

Data at t = 0, noise at t = 1: x_t = (1 - t) x0 + t eps (SD3 eq. 2 with a_t = 1 - t, b_t = t);
the network predicts the velocity v = dx_t/dt = eps - x0 and is trained with |v_hat - v|^2
(SD3 eq. 9-10). Sampling integrates dx/dt = v from t = 1 to t = 0 with Euler or Heun steps.

Timesteps for training: "uniform" or "logit_normal" t = sigmoid(m + s n), n ~ N(0, 1) (SD3
eq. 19). Resolution shift (SD3 eq. 23): t' = a t / (1 + (a - 1) t) with a = sqrt(m / n) for m
target and n base pixels (``resolution_shift``); ``shift`` applies to training draws and to the
sampling grid alike.

    rf = RectifiedFlow(t_sampling="logit_normal", logit_mean=0.0, logit_std=1.0)
    loss = rf.loss(net, x0, y)                                        # scalar
    x = rf.sample(net, (16, 2), steps=50, method="euler")             # (16, 2)
    logp = rf.log_likelihood(net, x0)                                 # (B,) nats
"""
import math

import torch

from ringflow.models.embeddings import drop_labels, guided, net_device
from ringflow.models.likelihood import ode_log_prob


def shift_time(t, shift):
    """SD3 eq. 23: t -> shift t / (1 + (shift - 1) t); shift > 1 spends more time near noise."""
    return shift * t / (1 + (shift - 1) * t)


def resolution_shift(num_pixels, base_pixels=256 * 256):
    """Shift factor sqrt(m / n), m = target and n = base resolution in pixels (SD3 sec. 5.3.2)."""
    return math.sqrt(num_pixels / base_pixels)


class RectifiedFlow:
    """Velocity-prediction flow-matching objective; holds no parameters."""

    def __init__(self, t_sampling="logit_normal", logit_mean=0.0, logit_std=1.0, shift=1.0,
                 label_dropout=0.1):
        if t_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"t_sampling must be 'uniform' or 'logit_normal', got {t_sampling!r}")
        self.t_sampling, self.m, self.s = t_sampling, logit_mean, logit_std
        self.shift, self.label_dropout = shift, label_dropout

    def sample_t(self, n, device=None, generator=None):
        """Training times (n,) in (0, 1), shifted."""
        if self.t_sampling == "uniform":
            t = torch.rand(n, generator=generator, device=device)
        else:
            t = torch.sigmoid(self.m + self.s * torch.randn(n, generator=generator, device=device))
        return shift_time(t, self.shift)

    @staticmethod
    def interpolate(x0, noise, t):
        """x_t = (1 - t) x0 + t noise: x0, noise (B, ...), t (B,) -> (B, ...)."""
        t = t.to(x0.dtype).reshape(-1, *[1] * (x0.dim() - 1))
        return (1 - t) * x0 + t * noise

    def loss(self, net, x0, y=None, generator=None):
        """Mean |net(x_t, t, y) - (eps - x0)|^2; labels dropped for CFG -> scalar."""
        t = self.sample_t(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        y = drop_labels(y, self.label_dropout, generator)
        return (net(self.interpolate(x0, noise, t), t, y) - (noise - x0)).pow(2).mean()

    def timesteps(self, steps):
        """Sampling grid (steps + 1,) from 1 down to 0, shifted."""
        return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), self.shift)

    @torch.no_grad()
    def sample(self, net, shape, *, steps=50, y=None, cfg_scale=1.0, generator=None,
               method="euler", noise=None, device=None):
        """Integrate dx/dt = v from noise (t = 1) to data (t = 0) -> (shape).

        method "euler" (``steps`` network calls) or "heun" (2 per step, Karras et al. 2022
        alg. 1: the last step to t = 0 is plain Euler). ``noise`` fixes the start.
        """
        if method not in ("euler", "heun"):
            raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")
        if noise is None:
            noise = torch.randn(shape, generator=generator, device=net_device(net, device))
        x, grid = noise, self.timesteps(steps).tolist()
        for t, t_next in zip(grid[:-1], grid[1:]):
            v = self.velocity(net, x, t, y, cfg_scale)
            x_next = x + (t_next - t) * v
            if method == "heun" and t_next > 0:
                v_next = self.velocity(net, x_next, t_next, y, cfg_scale)
                x_next = x + (t_next - t) * 0.5 * (v + v_next)
            x = x_next
        return x

    @staticmethod
    def velocity(net, x, t, y=None, cfg_scale=1.0):
        """Guided velocity at scalar time t: x (B, ...) -> (B, ...)."""
        return guided(net, x, torch.full((x.shape[0],), t, device=x.device), y, cfg_scale)

    def log_likelihood(self, net, x, y=None, *, steps=50, estimator="auto", generator=None):
        """log-density (B,) in nats of x (B, ...): the flow ODE from t = 0 to 1, N(0, I) prior."""
        def velocity(xt, t):
            return net(xt, t, y)

        return ode_log_prob(velocity, x, 0.0, 1.0, steps=steps, estimator=estimator,
                            generator=generator)
