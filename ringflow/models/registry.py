"""Plain dict registries: names -> constructors, and the two ``build_*`` calls train.py uses.

Networks (``NETWORKS``), all built as ``build_network(name, in_channels=, image_size=,
num_classes=, **kw)``; ``image_size=None`` means vector data of dimension ``in_channels``:
- "mlp": ``mlp.MLP`` for vectors (e.g. 2D); kw: hidden, depth.
- "unet": ``unet.UNet``; kw: base_channels, channel_mults, num_res_blocks, attn_resolutions,
  num_heads, dropout, upsample ("nearest" | "pixelshuffle").
- "dit", "dit-t", "dit-s", "dit-b", "dit-l", "dit-xl": ``dit.DiT``; the suffix is the size
  preset (same as ``preset="S"``); kw: patch_size, hidden_size, depth, num_heads, mlp_ratio.
- "mmdit", "mmdit-t", ... "mmdit-xl": ``mmdit.MMDiT``, same presets; kw as DiT plus
  context_dim, context_tokens, and text (true: class names as character tokens, SD3 style).
- "nice", "realnvp": ``flows.NICE`` / ``flows.RealNVP`` (vectors or flattened images);
  kw: hidden, depth, num_layers. Unconditional; num_classes is ignored.
- "vae": ``autoencoder.AutoEncoder`` (images <-> latents); kw: latent_channels, factor,
  base_channels. Trained by the "vae" objective; num_classes is ignored.

Objectives (``OBJECTIVES``), built as ``build_objective(name, **kw)``:
- "ddpm": ``ddpm.DDPM``; "rectified_flow": ``rectified_flow.RectifiedFlow``;
- "nice", "realnvp": ``likelihood.FlowLikelihood`` (pair with the network of the same name);
- "vae": ``autoencoder.VAELoss`` (reconstruction + KL; pair with the "vae" network).
Each has ``loss(net, x0, y=None) -> scalar``, ``sample(net, shape, *, steps, y=None,
cfg_scale=1.0, generator=None) -> (shape)`` and ``log_likelihood(net, x, y=None) -> (B,)``.

    net = build_network("dit-s", in_channels=1, image_size=8, num_classes=10, patch_size=2)
    obj = build_objective("rectified_flow", t_sampling="logit_normal")
"""

from ringflow.models.autoencoder import AutoEncoder, VAELoss
from ringflow.models.ddpm import DDPM
from ringflow.models.dit import DIT_PRESETS, DiT
from ringflow.models.flows import NICE, RealNVP
from ringflow.models.likelihood import FlowLikelihood
from ringflow.models.mlp import MLP
from ringflow.models.mmdit import MMDiT
from ringflow.models.rectified_flow import RectifiedFlow
from ringflow.models.unet import UNet


def _mlp(in_channels, image_size, num_classes, **kw):
    if image_size is not None:
        raise ValueError("'mlp' is for vector data: pass image_size=None and in_channels=dim")
    return MLP(dim=in_channels, num_classes=num_classes, **kw)


def _image_net(cls, preset=None):
    def build(in_channels, image_size, num_classes, **kw):
        if image_size is None:
            raise ValueError(f"{cls.__name__} needs image_size (square images)")
        if preset is not None:
            kw.setdefault("preset", preset)
        return cls(in_channels=in_channels, image_size=image_size, num_classes=num_classes, **kw)
    return build


NETWORKS = {"mlp": _mlp, "unet": _image_net(UNet), "dit": _image_net(DiT),
            "mmdit": _image_net(MMDiT), "nice": NICE, "realnvp": RealNVP,
            "vae": _image_net(AutoEncoder)}
for _size in DIT_PRESETS:
    NETWORKS[f"dit-{_size.lower()}"] = _image_net(DiT, _size)
    NETWORKS[f"mmdit-{_size.lower()}"] = _image_net(MMDiT, _size)

OBJECTIVES = {"ddpm": DDPM, "rectified_flow": RectifiedFlow,
              "nice": FlowLikelihood, "realnvp": FlowLikelihood, "vae": VAELoss}


def build_network(name, *, in_channels, image_size=None, num_classes=0, **kw):
    """Construct a registered network -> nn.Module; unknown names list the choices."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    return NETWORKS[name](in_channels=in_channels, image_size=image_size,
                          num_classes=num_classes, **kw)


def build_objective(name, **kw):
    """Construct a registered objective (DDPM, RectifiedFlow, FlowLikelihood or VAELoss)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name](**kw)
