"""Model source: where a style's base model lives, how it loads, and the tiny test model.

The tiny model has the SDXL architecture (two CLIP text encoders, a UNet with text-time
conditioning, a VAE) at a few MB with random weights: it makes abstract images, but it goes
through exactly the loading and inference code a real SDXL checkpoint does.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from serve_app.settings import Settings

TINY_MODEL = "tiny-sdxl"
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class ModelNotFound(LookupError):
    pass


def configure_torch(settings: Settings) -> None:
    """Per-replica torch threads: replicas share the node's cores."""
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)


def resolve_model(ref: str, models_dir: Path) -> Path:
    """A local tag (a folder under ``models_dir``) or an absolute path to a diffusers folder."""
    path = Path(ref) if ref.startswith("/") else models_dir / ref
    if not (ref.startswith("/") or _TAG.match(ref)) or not (path / "model_index.json").is_file():
        raise ModelNotFound(
            f"model {ref!r} not found: expected a diffusers folder with model_index.json at {path}"
        )
    return path


class DiffusionConfig(BaseModel):
    """What every diffusers call of a replica shares (Renderer and Animator)."""

    steps: int = Field(default=8, ge=1, le=150, description="Denoising steps.")
    guidance_scale: float = Field(default=5.0, ge=0.0, le=30.0)
    device: Literal["cpu", "cuda"] = Field(
        default="cpu", description="Where pipelines loaded from now on run."
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="Weights dtype of pipelines loaded from now on."
    )


def load_sdxl(path: Path, config: DiffusionConfig | None = None) -> Any:
    """Load an SDXL pipeline from a diffusers folder, refusing anything but safetensors."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    config = config or DiffusionConfig()
    pipe = StableDiffusionXLPipeline.from_pretrained(
        path, use_safetensors=True, torch_dtype=getattr(torch, config.dtype), local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(config.device)


def _clip_byte_vocab() -> dict[str, int]:
    """Byte-level BPE vocabulary of CLIP's tokenizer with no merges: every byte is a token."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = printable + [256 + i for i, b in enumerate(b for b in range(256) if b not in printable)]
    chars = [chr(c) for c in codes]
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def build_tiny_sdxl(dest: Path, seed: int = 0) -> Path:
    """Build the tiny SDXL-architecture pipeline from config and ``save_pretrained`` it.

    Idempotent: an existing folder is kept. Written to a temp folder and renamed into place.
    """
    if (dest / "model_index.json").is_file():
        return dest
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        vocab = _clip_byte_vocab()
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(
            str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), model_max_length=77
        )
        torch.manual_seed(seed)
        text_config = CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            projection_dim=32,
            max_position_embeddings=77,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
            hidden_act="gelu",
        )
        unet = UNet2DConditionModel(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            norm_num_groups=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            transformer_layers_per_block=(1, 1),
            use_linear_projection=True,
            cross_attention_dim=64,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=80,  # 6 time ids * 8 + pooled text 32
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            sample_size=128,
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            force_upcast=False,  # already float32; upcasting would only log a warning per call
        )
        scheduler = EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        )
        pipe: Any = StableDiffusionXLPipeline(
            vae=vae,
            unet=unet,
            scheduler=scheduler,
            text_encoder=CLIPTextModel(text_config),
            tokenizer=tokenizer,
            text_encoder_2=CLIPTextModelWithProjection(text_config),
            tokenizer_2=tokenizer,
        )
        staged = Path(tmp) / "pipeline"
        pipe.save_pretrained(staged, safe_serialization=True)
        if not (dest / "model_index.json").is_file():
            shutil.rmtree(dest, ignore_errors=True)
            staged.rename(dest)
    return dest
