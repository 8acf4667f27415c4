"""MMDiT with SD3's second stream: class names as character tokens, joint attention with
QK-norm, pooled text through adaLN, CFG by dropping the text stream."""
import pytest
import torch

from ringflow.models import MMDiT, RectifiedFlow
from ringflow.models.embeddings import NULL_LABEL, guided
from ringflow.models.text import TextTokens, class_prompts, tokenize

TINY = dict(in_channels=1, image_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=4,
            num_classes=10, text=True)


def build(seed=0):
    torch.manual_seed(seed)
    net = MMDiT(**TINY)
    with torch.no_grad():                                  # leave adaLN-Zero's zeros behind
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return net


def inputs(batch=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 1, 8, 8, generator=g), torch.rand(batch, generator=g)


def test_prompts_become_character_tokens():
    assert class_prompts(3) == ["digit 0", "digit 1", "digit 2"]
    ids = tokenize(["digit 7", "ab"])
    assert ids.shape == (2, 7) and ids[1, 2:].eq(0).all() and ids[0].ne(0).all()
    with pytest.raises(ValueError, match="may use only"):
        tokenize(["digit #7"])
    tokens, pooled, mask = TextTokens(10, 16)(torch.tensor([7, NULL_LABEL]))
    assert tokens.shape == (2, 7, 16) and pooled.shape == (2, 16)
    assert mask.tolist() == [[True] * 7, [False] * 7]
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
        TextTokens(10, 16)(torch.tensor([10]))


def test_shapes_backward_and_every_part_gets_a_gradient():
    net = build()
    x, t = inputs()
    out = net(x, t, torch.tensor([0, 1, 2, NULL_LABEL]))
    assert out.shape == x.shape
    out.pow(2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    # the null label's pooled vector gets a gradient, the character table's pad row does not
    assert missing == [], missing
    assert net.text.chars.weight.grad[0].abs().sum() == 0


def test_output_depends_on_the_prompt_and_is_deterministic():
    net = build()
    x, t = inputs()
    y = torch.tensor([3, 4, 5, 6])
    out = net(x, t, y)
    assert not torch.allclose(out, net(x, t, y.roll(1)), atol=1e-5)
    assert torch.equal(out, build()(x, t, y))                       # same seed, same output
    assert not torch.allclose(out, build(seed=1)(x, t, y), atol=1e-5)


def test_a_dropped_label_removes_the_text_stream():
    net = build()
    x, t = inputs()
    null = torch.full((4,), NULL_LABEL)
    uncond = net(x, t, null)
    assert torch.equal(uncond, net(x, t, None))
    with torch.no_grad():                                           # any text weights at all
        net.text.chars.weight.normal_()
        net.text.pos.normal_()
        for blk in net.blocks:
            blk.ctx.qkv.weight.normal_()
    assert torch.allclose(uncond, net(x, t, null), atol=1e-6)       # the stream is not seen
    assert not torch.allclose(net(x, t, torch.arange(4)), uncond, atol=1e-5)


def test_rows_of_a_mixed_batch_match_rows_run_alone():
    # CFG runs [y; null] as one batch: masking must be per row
    net = build()
    x, t = inputs()
    y = torch.tensor([0, NULL_LABEL, 5, NULL_LABEL])
    batch = net(x, t, y)
    for i in range(4):
        assert torch.allclose(batch[i:i + 1], net(x[i:i + 1], t[i:i + 1], y[i:i + 1]), atol=1e-5)
    guided_out = guided(net, x, t, torch.arange(4), cfg_scale=2.0)
    cond, uncond = net(x, t, torch.arange(4)), net(x, t, torch.full((4,), NULL_LABEL))
    assert torch.allclose(guided_out, uncond + 2.0 * (cond - uncond), atol=1e-5)


def test_trains_a_few_steps_and_the_loss_falls():
    torch.manual_seed(0)
    net, rf = MMDiT(**TINY), RectifiedFlow(label_dropout=0.2)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 1, 8, 8, generator=g).clamp(-1, 1).expand(32, -1, -1, -1)
    y = torch.arange(32) % 10
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = rf.loss(net, x0, y, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)


def test_bad_combinations_are_refused():
    with pytest.raises(ValueError, match="num_classes > 0"):
        MMDiT(**{**TINY, "num_classes": 0})
    net = build()
    x, t = inputs()
    with pytest.raises(ValueError, match="text=True"):
        net(x, t, torch.arange(4), context=torch.randn(4, 3, 8))
