"""UNet for DDPM / rectified flow on small images (Ho et al. 2020, sec. B; Nichol & Dhariwal 2021).

GroupNorm residual blocks that add a timestep(+label) embedding, self-attention at the
resolutions listed in ``attn_resolutions``, downsampling by a stride-2 conv and upsampling by
nearest-neighbour + conv (``upsample="nearest"``) or conv + PixelShuffle (``"pixelshuffle"``,
Shi et al. 2016). ``net(x, t, y=None)``: x (B, C, H, W), t (B,) in [0, 1], y (B,) | None ->
(B, C, H, W).

    net = UNet(in_channels=1, image_size=8, base_channels=32, channel_mults=(1, 2))
    eps = net(torch.randn(4, 1, 8, 8), torch.rand(4))             # (4, 1, 8, 8)
"""
import torch
import torch.nn.functional as F
from torch import nn

from ringflow.models.embeddings import Conditioning


def group_norm(channels):
    """GroupNorm with up to 32 groups of at least 4 channels (DDPM: 32 groups for 128).

    One channel per group would subtract each channel's own mean and erase the per-channel
    timestep embedding that ResBlock adds just before its second norm.
    """
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and channels // g >= 4
                  or g == 1)
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """(B, Cin, H, W), cond (B, E) -> (B, Cout, H, W); the second conv starts at zero."""

    def __init__(self, cin, cout, emb_dim, dropout=0.0):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = group_norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, c):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(c))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, output projection at zero."""

    def __init__(self, channels, num_heads=4):
        super().__init__()
        self.heads = num_heads if channels % num_heads == 0 else 1
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x, c=None):
        b, ch, hh, ww = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, ch // self.heads, hh * ww)
        q, k, v = qkv.transpose(-1, -2).unbind(1)                 # each (B, heads, HW, ch/heads)
        h = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(h.transpose(-1, -2).reshape(b, ch, hh, ww))


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x, c=None):
        return self.conv(x)


class Upsample(nn.Module):
    """x2 spatially: nearest + 3x3 conv, or 3x3 conv to 4C + PixelShuffle(2)."""

    def __init__(self, channels, mode="nearest"):
        super().__init__()
        if mode not in ("nearest", "pixelshuffle"):
            raise ValueError(f"upsample must be 'nearest' or 'pixelshuffle', got {mode!r}")
        self.mode = mode
        out = channels * 4 if mode == "pixelshuffle" else channels
        self.conv = nn.Conv2d(channels, out, 3, padding=1)

    def forward(self, x, c=None):
        if self.mode == "nearest":
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        return F.pixel_shuffle(self.conv(x), 2)


class UNet(nn.Module):
    """Timestep/label-conditioned UNet; each level halves the resolution (see module doc).

    image_size must be divisible by 2**(len(channel_mults) - 1).
    """

    def __init__(self, in_channels=1, image_size=28, base_channels=64, channel_mults=(1, 2, 2),
                 num_res_blocks=2, attn_resolutions=(7, 8), num_heads=4, num_classes=0,
                 dropout=0.0, upsample="nearest"):
        super().__init__()
        factor = 2 ** (len(channel_mults) - 1)
        if image_size % factor:
            raise ValueError(f"image_size {image_size} must be divisible by {factor} for "
                             f"{len(channel_mults)} levels; use fewer channel_mults")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        emb = base_channels * 4
        self.cond = Conditioning("UNet", in_channels, image_size, emb, num_classes,
                                 check_height=False)
        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down, skips, ch, res = nn.ModuleList(), [base_channels], base_channels, image_size
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(self._stage(ch, base_channels * mult, emb, res,
                                             attn_resolutions, num_heads, dropout))
                ch = base_channels * mult
                skips.append(ch)
            if level < len(channel_mults) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb, dropout), AttnBlock(ch, num_heads),
                                  ResBlock(ch, ch, emb, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(self._stage(ch + skips.pop(), base_channels * mult, emb, res,
                                           attn_resolutions, num_heads, dropout))
                ch = base_channels * mult
            if level > 0:
                self.up.append(Upsample(ch, upsample))
                res *= 2
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(),
                                 nn.Conv2d(ch, in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @staticmethod
    def _stage(cin, cout, emb, res, attn_resolutions, num_heads, dropout):
        blocks = [ResBlock(cin, cout, emb, dropout)]
        if res in attn_resolutions:
            blocks.append(AttnBlock(cout, num_heads))
        return nn.ModuleList(blocks)

    def forward(self, x, t, y=None):
        c = self.cond(x, t, y)                                     # (B, E)
        h, skips = self.stem(x), []
        skips.append(h)
        for layer in self.down:
            h = self._apply(layer, h, c)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, c)
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h)
            else:
                h = self._apply(layer, torch.cat([h, skips.pop()], dim=1), c)
        return self.out(h)

    @staticmethod
    def _apply(layer, h, c):
        for block in (layer if isinstance(layer, nn.ModuleList) else [layer]):
            h = block(h, c)
        return h
