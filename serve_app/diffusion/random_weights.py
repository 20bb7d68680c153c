"""SDXL's parts built from their published configs with random weights, directly on a device.

Random weights cost exactly what trained ones cost (the same shapes, the same kernels), so a
GPU's speed is measured without downloading a checkpoint. The configs are data files
(``config/models/sdxl-full.json``: SDXL base 1.0's UNet, VAE, both text encoders and scheduler,
the AnimateDiff SDXL motion adapter, IP-Adapter SDXL and its ViT-bigG image encoder;
``sdxl-tiny.json``: the same architecture at a few MB, for a CPU). ``soul bench gpu`` times them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CONFIGS = Path(__file__).resolve().parents[2] / "config" / "models"


def load_config(size: str) -> dict[str, Any]:
    """``size``: full or tiny (``config/models/sdxl-<size>.json``)."""
    config: dict[str, Any] = json.loads((CONFIGS / f"sdxl-{size}.json").read_text())
    return config


@dataclass
class SDXLParts:
    """What a text-to-image call runs: the text encoders, the UNet, the scheduler, the VAE."""

    config: dict[str, Any]
    text_encoder: Any
    text_encoder_2: Any
    unet: Any
    vae: Any
    scheduler: Any
    device: torch.device
    dtype: torch.dtype


def _on(device: torch.device, dtype: torch.dtype, build: Any) -> Any:
    """A module initialised on ``device`` (its random weights never pass through the host)."""
    with torch.device(device):
        model = build()
    return model.to(dtype=dtype).eval().requires_grad_(False)


def build_sdxl(config: dict[str, Any], device: torch.device, dtype: torch.dtype) -> SDXLParts:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def text(cls: Any, section: str) -> Any:
        return _on(device, dtype, lambda: cls(CLIPTextConfig(**config[section])))

    return SDXLParts(
        config=config,
        text_encoder=text(CLIPTextModel, "text_encoder"),
        text_encoder_2=text(CLIPTextModelWithProjection, "text_encoder_2"),
        unet=_on(device, dtype, lambda: UNet2DConditionModel.from_config(config["unet"])),
        vae=_on(device, dtype, lambda: AutoencoderKL.from_config(config["vae"])),
        scheduler=EulerDiscreteScheduler.from_config(config["scheduler"]),
        device=device,
        dtype=dtype,
    )


def motion_unet(parts: SDXLParts) -> Any:
    """The AnimateDiff UNet: the SDXL UNet with the motion adapter's temporal layers."""
    from diffusers import MotionAdapter, UNetMotionModel

    adapter = _on(
        parts.device, parts.dtype, lambda: MotionAdapter.from_config(parts.config["motion_adapter"])
    )
    with torch.device(parts.device):
        unet = UNetMotionModel.from_unet2d(parts.unet, adapter)
    return unet.to(dtype=parts.dtype).eval().requires_grad_(False)


def add_ip_adapter(parts: SDXLParts) -> Any:
    """IP-Adapter on the UNet (its image projection and a key/value pair per cross-attention,
    random, in the published state-dict layout); returns its image encoder."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    section = parts.config["ip_adapter"]
    encoder = _on(
        parts.device,
        parts.dtype,
        lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**section["image_encoder"])),
    )
    unet, tokens = parts.unet, section["num_tokens"]
    cross, embed = unet.config.cross_attention_dim, encoder.config.projection_dim

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=parts.device, dtype=parts.dtype) * 0.02

    image_proj = {
        "proj.weight": rand(tokens * cross, embed),
        "proj.bias": rand(tokens * cross),
        "norm.weight": torch.ones(cross, device=parts.device, dtype=parts.dtype),
        "norm.bias": rand(cross),
    }
    ip_adapter: dict[str, torch.Tensor] = {}
    cross_attentions = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
    for i, name in enumerate(cross_attentions):
        hidden = _hidden_size(unet.config.block_out_channels, name)
        ip_adapter[f"{2 * i + 1}.to_k_ip.weight"] = rand(hidden, cross)
        ip_adapter[f"{2 * i + 1}.to_v_ip.weight"] = rand(hidden, cross)
    unet._load_ip_adapter_weights([{"image_proj": image_proj, "ip_adapter": ip_adapter}])
    unet.to(device=parts.device, dtype=parts.dtype)
    return encoder


def _hidden_size(blocks: list[int], name: str) -> int:
    if name.startswith("mid_block"):
        return blocks[-1]
    if name.startswith("up_blocks"):
        return list(reversed(blocks))[int(name[len("up_blocks.")])]
    return blocks[int(name[len("down_blocks.")])]
