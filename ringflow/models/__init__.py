"""ringflow.models: networks and generative objectives in plain torch, nothing distributed.

Networks take ``net(x, t, y=None)`` (t (B,) in [0, 1], 0 = data) and know nothing of the
objective; objectives take any network as an argument (``loss(net, x0, y)``,
``sample(net, shape, ...)``). Names -> constructors live in ``registry``.
"""
from ringflow.models.autoencoder import AutoEncoder, VAELoss, psnr
from ringflow.models.ddpm import DDPM, beta_schedule
from ringflow.models.dit import DIT_PRESETS, DiT
from ringflow.models.embeddings import NULL_LABEL
from ringflow.models.flows import NICE, Flow, RealNVP
from ringflow.models.likelihood import FlowLikelihood, bits_per_dim, dequantize, ode_log_prob
from ringflow.models.mlp import MLP
from ringflow.models.mmdit import MMDiT
from ringflow.models.rectified_flow import RectifiedFlow, resolution_shift, shift_time
from ringflow.models.registry import NETWORKS, OBJECTIVES, build_network, build_objective
from ringflow.models.unet import UNet

__all__ = ["AutoEncoder", "DDPM", "DIT_PRESETS", "DiT", "Flow", "FlowLikelihood", "MLP", "MMDiT", "NETWORKS",
           "NICE", "NULL_LABEL", "OBJECTIVES", "RealNVP", "RectifiedFlow", "UNet",
           "beta_schedule", "bits_per_dim", "build_network", "build_objective", "dequantize",
           "ode_log_prob", "psnr", "resolution_shift", "shift_time", "VAELoss"]
