"""Pipelines: SDXL base models loaded once per replica, soul LoRA sets switched on them, and the
tiny test models.

The tiny model has the SDXL architecture (two CLIP text encoders, a UNet with text-time
conditioning, a VAE) at a few MB with random weights: it makes abstract images, but it goes
through exactly the loading and inference code a real SDXL checkpoint does. Tiny LoRAs for it
are real PEFT adapters saved with diffusers' ``save_lora_weights``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from serve_app.model_manager import ModelManager, ModelNotFound
from serve_app.settings import Settings

TINY_MODEL = "tiny-sdxl"
TINY_LORAS = {"tiny-lora-pastel": 1, "tiny-lora-ink": 2}  # tag -> seed


def configure_torch(settings: Settings) -> None:
    """Per-replica torch threads: replicas share the node's cores."""
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)


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
        path, use_safetensors=True, dtype=getattr(torch, config.dtype), local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(config.device)


def model_manager(settings: Settings) -> ModelManager:
    return ModelManager(
        settings.resolved_models_dir,
        civitai_url=settings.civitai_url,
        civitai_token=settings.civitai_token.get_secret_value() if settings.civitai_token else "",
        max_bytes=settings.model_max_bytes,
    )


def parse_lora(entry: str) -> tuple[str, float]:
    """``"<ref>"`` or ``"<ref>=<weight>"`` (as in a style's ``lora_ids``) → (ref, weight)."""
    ref, _, weight = entry.rpartition("=") if "=" in entry else (entry, "", "1")
    return ref, float(weight)


def adapter_name(ref: str) -> str:
    """A stable adapter name for a LoRA ref (PEFT names must be plain identifiers)."""
    return "lora_" + hashlib.sha1(ref.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class LoadedStyle:
    """A base pipeline plus the adapters (name, weight) a style switches on in it."""

    pipe: Any
    adapters: tuple[tuple[str, float], ...]


class StylePipelines:
    """Base pipelines by model ref, loaded once; LoRAs loaded into them once as named adapters
    and switched per call (``set_adapters``), so changing style never reloads the base model.
    At most ``max_loras`` adapters stay loaded per base model; the least recently used go.

    Not thread-safe by itself: callers hold ``lock`` around ``style`` and any pipeline call.
    """

    def __init__(self, manager: ModelManager, config: DiffusionConfig, max_loras: int = 8) -> None:
        self.manager = manager
        self.config = config
        self.max_loras = max_loras
        self.lock = threading.RLock()
        self.base_loads = 0
        self._bases: dict[str, Any] = {}
        self._recent: dict[str, OrderedDict[str, None]] = {}  # base ref -> adapters, LRU first

    def base(self, base_model_ref: str) -> Any:
        if base_model_ref not in self._bases:
            path = self.manager.ensure(base_model_ref)
            if not (path / "model_index.json").is_file():
                raise ModelNotFound(
                    f"base model {base_model_ref!r} must be a diffusers folder "
                    "(single-file checkpoints are not loaded yet)"
                )
            self._bases[base_model_ref] = load_sdxl(path, self.config)
            self._recent[base_model_ref] = OrderedDict()
            self.base_loads += 1
        return self._bases[base_model_ref]

    def style(self, base_model_ref: str, lora_ids: list[str]) -> LoadedStyle:
        """The base pipeline with every LoRA of the set loaded (downloaded first if needed)."""
        pipe = self.base(base_model_ref)
        recent = self._recent[base_model_ref]
        adapters = []
        for entry in lora_ids:
            ref, weight = parse_lora(entry)
            name = adapter_name(ref)
            if name not in recent:
                path = self.manager.ensure(ref)
                if path.suffix != ".safetensors":
                    raise ModelNotFound(f"LoRA {ref!r} must be a .safetensors file")
                pipe.load_lora_weights(str(path), adapter_name=name)
            recent[name] = None
            recent.move_to_end(name)
            adapters.append((name, weight))
        in_use = {name for name, _ in adapters}
        for name in [n for n in recent if n not in in_use][: max(0, len(recent) - self.max_loras)]:
            pipe.delete_adapters([name])
            del recent[name]
        return LoadedStyle(pipe, tuple(adapters))

    def activate(self, style: LoadedStyle) -> Any:
        """Switch the style's adapters on (and every other off); the pipeline to call."""
        if style.adapters:
            style.pipe.enable_lora()
            names, weights = zip(*style.adapters, strict=True)
            style.pipe.set_adapters(list(names), adapter_weights=list(weights))
        elif style.pipe.get_list_adapters():
            style.pipe.disable_lora()
        return style.pipe


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


def build_tiny_lora(dest: Path, base: Path, seed: int) -> Path:
    """A tiny LoRA for the tiny model: a real PEFT adapter on the UNet's attention projections,
    randomly initialised (so it visibly changes images) and saved with ``save_lora_weights``."""
    if dest.is_file():
        return dest
    import torch
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = load_sdxl(base)
    torch.manual_seed(seed)
    pipe.unet.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights=False,
        )
    )
    # Saved files carry weights, not alpha: a stronger B makes each LoRA's look obvious.
    layers = {
        k: v * 8 if "lora_B" in k else v for k, v in get_peft_model_state_dict(pipe.unet).items()
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        StableDiffusionXLPipeline.save_lora_weights(
            tmp,
            unet_lora_layers=layers,
            weight_name=dest.name,
            safe_serialization=True,
        )
        (Path(tmp) / dest.name).rename(dest)
    return dest


def build_tiny_models(models_dir: Path) -> list[Path]:
    """The tiny model and its tiny LoRAs (what `soul models tiny` and the tests build)."""
    base = build_tiny_sdxl(models_dir / TINY_MODEL)
    loras = [
        build_tiny_lora(models_dir / f"{tag}.safetensors", base, seed)
        for tag, seed in TINY_LORAS.items()
    ]
    return [base, *loras]
