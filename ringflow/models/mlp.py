"""Small networks for low-dimensional (e.g. 2D) data.

``MLP`` is a time- and label-conditioned residual MLP for diffusion / rectified flow:
``net(x, t, y=None)`` with x (B, D), t (B,) in [0, 1] (see ``embeddings.py``), y (B,) or None,
returning (B, D). ``mlp`` builds the plain conditioner nets used inside flow couplings.

    net = MLP(dim=2, hidden=128, depth=3)
    v = net(torch.randn(16, 2), torch.rand(16))                   # (16, 2)
"""
from torch import nn

from ringflow.models.embeddings import LabelEmbedder, TimestepEmbedder


def mlp(in_dim, out_dim, hidden, depth, zero_last=False):
    """Plain MLP: (B, in_dim) -> (B, out_dim) with ``depth`` hidden SiLU layers of ``hidden``.

    ``zero_last`` zero-initialises the output layer so a coupling starts as the identity.
    """
    dims = [in_dim] + [hidden] * depth
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    last = nn.Linear(dims[-1], out_dim)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class ResidualBlock(nn.Module):
    """h + W2 SiLU(W1 SiLU(LN(h) + c)) with the condition c (B, hidden) added inside."""

    def __init__(self, hidden):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h, c):
        return h + self.fc2(self.act(self.fc1(self.act(self.norm(h) + c))))


class MLP(nn.Module):
    """Conditioned residual MLP: (x (B, dim), t (B,), y (B,) | None) -> (B, dim).

    num_classes=0 makes it unconditional (y must then be None).
    """

    def __init__(self, dim=2, hidden=256, depth=3, num_classes=0):
        super().__init__()
        self.dim, self.num_classes = dim, num_classes
        self.inp = nn.Linear(dim, hidden)
        self.time = TimestepEmbedder(hidden, freq_dim=64)
        self.label = LabelEmbedder(num_classes, hidden) if num_classes else None
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(depth))
        # no LayerNorm before the output: it would bound |out|, and eps or v grow with |x|
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x, t, y=None):
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLP expects x of shape (B, {self.dim}), got {tuple(x.shape)}")
        c = self.time(t)                                           # (B, hidden)
        if self.label is not None:
            c = c + self.label(y, batch=x.shape[0], device=x.device)
        elif y is not None:
            raise ValueError("this MLP was built with num_classes=0; pass y=None")
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(h)
