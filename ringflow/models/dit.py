"""DiT: diffusion transformer with adaLN-Zero blocks (Peebles & Xie 2023, arXiv:2212.09748).

Patchify with a p x p stride-p conv, add fixed 2D sin-cos positions, run ``depth`` blocks whose
LayerNorms are modulated (shift, scale, gate) by the timestep+label embedding, and unpatchify.
Every modulation and the final projection start at zero, so each block starts as the identity
and the network starts by predicting 0 (adaLN-Zero, sec. 3.2).

``net(x, t, y=None)``: x (B, C, H, W), t (B,) in [0, 1], y (B,) | None -> (B, C, H, W).
Size presets (hidden, depth, heads) in ``DIT_PRESETS``: "T" (tiny, for CPU), "S", "B", "L", "XL".

    net = DiT(in_channels=1, image_size=8, patch_size=2, preset="T", num_classes=10)
    out = net(torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, -1]))
"""
import torch.nn.functional as F
from torch import nn

from ringflow.models.embeddings import Conditioning, sincos_pos_embed_2d

DIT_PRESETS = {  # name: (hidden_size, depth, num_heads); S/B/L/XL as in the DiT paper, table 1
    "T": (128, 4, 4),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
}


def resolve_preset(presets, preset, hidden_size, depth, num_heads):
    """Explicit sizes win over the preset; no preset and no sizes is an error."""
    base = presets.get(preset) if preset else (None, None, None)
    if base is None:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
    sizes = [v if v is not None else b for v, b in zip((hidden_size, depth, num_heads), base)]
    if None in sizes:
        raise ValueError("give a preset or all of hidden_size, depth, num_heads")
    return sizes


def modulate(x, shift, scale):
    """adaLN: x (B, N, D) * (1 + scale (B, D)) + shift (B, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head self-attention on (B, N, D)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} must be divisible by num_heads {num_heads}")
        self.heads = num_heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)                # (B, heads, N, D/heads)
        return self.proj(h.transpose(1, 2).reshape(b, n, d))


def feed_forward(dim, mlp_ratio):
    return nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(approximate="tanh"),
                         nn.Linear(int(dim * mlp_ratio), dim))


def zero_linear(din, dout):
    layer = nn.Linear(din, dout)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class DiTBlock(nn.Module):
    """x (B, N, D), c (B, D) -> (B, N, D); adaLN-Zero modulation of attention and MLP."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = feed_forward(dim, mlp_ratio)
        self.ada = nn.Sequential(nn.SiLU(), zero_linear(dim, 6 * dim))

    def forward(self, x, c):
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c).chunk(6, dim=-1)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), sh1, sc1))
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), sh2, sc2))


class FinalLayer(nn.Module):
    """(B, N, D), c (B, D) -> (B, N, p*p*C), zero-initialised."""

    def __init__(self, dim, out_dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), zero_linear(dim, 2 * dim))
        self.linear = zero_linear(dim, out_dim)

    def forward(self, x, c):
        shift, scale = self.ada(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class Patchify(nn.Module):
    """(B, C, H, W) <-> (B, N, D) tokens, N = (H/p)(W/p), with fixed sin-cos positions."""

    def __init__(self, in_channels, image_size, patch_size, dim):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be divisible by "
                             f"patch_size {patch_size}")
        self.c, self.p, self.grid = in_channels, patch_size, image_size // patch_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.register_buffer("pos", sincos_pos_embed_2d(dim, self.grid, self.grid)[None],
                             persistent=False)

    def forward(self, x):
        tokens = self.proj(x).flatten(2).transpose(1, 2)            # (B, N, D)
        return tokens + self.pos.to(tokens.dtype)                   # fp32 positions, any dtype

    def unpatchify(self, tokens):
        """(B, N, p*p*C) -> (B, C, H, W)."""
        b, g, p, c = tokens.shape[0], self.grid, self.p, self.c
        x = tokens.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, g * p, g * p)


class DiT(nn.Module):
    """Class-conditional DiT; see module doc. num_classes=0 is unconditional."""

    def __init__(self, in_channels=4, image_size=32, patch_size=2, hidden_size=None, depth=None,
                 num_heads=None, preset="T", mlp_ratio=4.0, num_classes=0):
        super().__init__()
        dim, depth, heads = resolve_preset(DIT_PRESETS, preset, hidden_size, depth, num_heads)
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.patch = Patchify(in_channels, image_size, patch_size, dim)
        self.cond = Conditioning("DiT", in_channels, image_size, dim, num_classes)
        self.blocks = nn.ModuleList(DiTBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.final = FinalLayer(dim, patch_size * patch_size * in_channels)
        self.apply(_init_linear)

    def forward(self, x, t, y=None):
        c = self.cond(x, t, y)                                     # (B, D)
        h = self.patch(x)                                          # (B, N, D)
        for block in self.blocks:
            h = block(h, c)
        return self.patch.unpatchify(self.final(h, c))


def _init_linear(module):
    """Xavier-uniform for linear layers that are not zero-initialised (DiT's initialize_weights)."""
    if isinstance(module, nn.Linear) and module.weight.abs().sum() > 0:
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
