"""Every registered network at a tiny size: shapes, backward, seed determinism, and that the
output really depends on x, t and y; presets, CFG and the registry's errors."""
import pytest
import torch

from ringflow.models.dit import DIT_PRESETS, resolve_preset
from ringflow.models.embeddings import NULL_LABEL, drop_labels, guided
from ringflow.models.registry import NETWORKS, OBJECTIVES, build_network, build_objective

TINY_DIT = dict(hidden_size=32, depth=2, num_heads=4, patch_size=2)
TINY = {  # name -> (in_channels, image_size, num_classes, kwargs)
    "mlp": (2, None, 3, dict(hidden=32, depth=2)),
    "unet": (1, 8, 3, dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                           attn_resolutions=(4,))),
    "unet-pixelshuffle": (3, 8, 0, dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                                        attn_resolutions=(4,), upsample="pixelshuffle")),
    "nice": (1, 4, 0, dict(hidden=16, depth=1, num_layers=2)),
    "realnvp": (2, None, 0, dict(hidden=16, depth=1, num_layers=2)),
}
for _name in NETWORKS:
    if _name.startswith(("dit", "mmdit")):
        TINY[_name] = (1, 8, 3, TINY_DIT)


def build(name, seed=0):
    torch.manual_seed(seed)
    c, size, classes, kw = TINY[name]
    net = build_network(name.replace("-pixelshuffle", ""), in_channels=c, image_size=size,
                        num_classes=classes, **kw)
    with torch.no_grad():                                            # leave zero-init behind
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return net, c, size, classes


def inputs(c, size, classes, batch=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, c) if size is None else (batch, c, size, size), generator=g)
    y = torch.tensor([0, 1, 2, NULL_LABEL])[:batch] if classes else None
    return x, torch.rand(batch, generator=g), y


def test_every_registered_network_is_covered():
    # the autoencoder is no net(x, t, y): test_autoencoder.py covers it
    assert set(NETWORKS) - {"vae"} <= set(TINY)
    assert {"mlp", "unet", "dit", "mmdit", "dit-s", "dit-b", "nice", "realnvp"} <= set(NETWORKS)
    assert set(OBJECTIVES) == {"ddpm", "rectified_flow", "nice", "realnvp", "vae"}


FLOWS = ("nice", "realnvp")


def run(net, name, x, t, y):
    """Main output: z (B, D) for flows (unconditional), net(x, t, y) otherwise."""
    return net(x)[0] if name in FLOWS else net(x, t, y)


@pytest.mark.parametrize("name", sorted(TINY))
def test_shapes_backward_and_determinism(name):
    net, c, size, classes = build(name)
    x, t, y = inputs(c, size, classes)
    out = run(net, name, x, t, y)
    assert out.shape == ((4, x[0].numel()) if name in FLOWS else x.shape)
    assert not torch.allclose(out, run(net, name, x.roll(1, 0), t, y), atol=1e-5)  # uses x
    if name not in FLOWS:
        assert not torch.allclose(out, net(x, t.flip(0) * 0.5, y), atol=1e-5)      # uses t
    if classes:
        assert not torch.allclose(out, net(x, t, y.roll(1)), atol=1e-5)            # uses y
    loss = -net.log_prob(x).mean() if name in FLOWS else out.pow(2).mean()
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert torch.equal(out, run(build(name)[0], name, x, t, y))     # same seed, same net


@pytest.mark.parametrize("name", ["dit", "mmdit", "unet"])
def test_zero_init_networks_start_at_zero(name):
    torch.manual_seed(0)
    c, size, classes, kw = TINY[name]
    net = build_network(name, in_channels=c, image_size=size, num_classes=classes, **kw)
    x, t, y = inputs(c, size, classes)
    assert torch.equal(net(x, t, y), torch.zeros_like(x))           # adaLN-Zero / zero conv out


def test_presets_match_dit_paper_and_explicit_sizes_win():
    assert DIT_PRESETS["S"] == (384, 12, 6) and DIT_PRESETS["XL"] == (1152, 28, 16)
    assert resolve_preset(DIT_PRESETS, "B", None, 2, None) == [768, 2, 12]
    with pytest.raises(ValueError, match="preset"):
        resolve_preset(DIT_PRESETS, "XXL", None, None, None)


def test_null_label_equals_no_label_and_guidance_mixes_outputs():
    net, c, size, classes = build("dit")
    x, t, _ = inputs(c, size, classes)
    null = torch.full((4,), NULL_LABEL)
    assert torch.allclose(net(x, t, None), net(x, t, null))
    y = torch.tensor([0, 1, 2, 0])
    cond, uncond = net(x, t, y), net(x, t, null)
    assert torch.allclose(guided(net, x, t, y, 1.0), cond)
    assert torch.allclose(guided(net, x, t, y, 0.0), uncond, atol=1e-6)
    assert torch.allclose(guided(net, x, t, y, 3.0), uncond + 3 * (cond - uncond), atol=1e-5)


def test_drop_labels_rate():
    y = torch.zeros(20_000, dtype=torch.long)
    dropped = drop_labels(y, 0.1, torch.Generator().manual_seed(0))
    assert abs((dropped == NULL_LABEL).float().mean() - 0.1) < 0.01
    assert drop_labels(None, 0.1) is None and torch.equal(drop_labels(y, 0.0), y)


def test_bad_inputs_fail_loudly():
    net, *_ = build("dit")
    with pytest.raises(ValueError, match="expects"):
        net(torch.randn(2, 3, 8, 8), torch.rand(2))
    with pytest.raises(ValueError, match="labels must be in"):
        net(torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="unknown network"):
        build_network("resnet", in_channels=1, image_size=8)
    with pytest.raises(ValueError, match="divisible"):
        build_network("unet", in_channels=1, image_size=10, channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="unknown objective"):
        build_objective("gan")
    assert type(build_objective("rectified_flow")).__name__ == "RectifiedFlow"
