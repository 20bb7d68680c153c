"""Pipelines: SDXL base models loaded once per replica, their AnimateDiff versions (one per motion
module), soul LoRA sets switched on them, and the tiny test models.

The tiny model has the SDXL architecture (two CLIP text encoders, a UNet with text-time
conditioning, a VAE) at a few MB with random weights: it makes abstract images, but it goes
through exactly the loading and inference code a real SDXL checkpoint does. Tiny LoRAs for it
are real PEFT adapters saved with diffusers' ``save_lora_weights``; the tiny motion adapter is a
diffusers ``MotionAdapter`` that fits the tiny UNet.
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
TINY_MOTION = "tiny-motion"
TINY_UNET_BLOCKS = (32, 64)  # the tiny UNet's block_out_channels, one layer per block


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
    attention: Literal["sdpa", "xformers"] = Field(
        default="sdpa",
        description="Attention kernels of pipelines loaded from now on: PyTorch SDPA, or "
        "xformers (the `gpu` extra; CUDA only).",
    )


def torch_dtype(config: DiffusionConfig) -> Any:
    import torch

    return getattr(torch, config.dtype)


def _local_weights(config: DiffusionConfig) -> dict[str, Any]:
    """``from_pretrained`` arguments of every load: local files, safetensors only."""
    return {"use_safetensors": True, "dtype": torch_dtype(config), "local_files_only": True}


def load_sdxl(path: Path, config: DiffusionConfig | None = None) -> Any:
    """Load an SDXL pipeline from a diffusers folder, refusing anything but safetensors."""
    from diffusers import StableDiffusionXLPipeline

    config = config or DiffusionConfig()
    pipe = StableDiffusionXLPipeline.from_pretrained(path, **_local_weights(config))
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(config.device)
    if config.attention == "xformers":  # raises clearly where xformers or CUDA is missing
        pipe.enable_xformers_memory_efficient_attention()
    return pipe


def load_animatediff(base: Any, base_path: Path, adapter: Path, config: DiffusionConfig) -> Any:
    """An AnimateDiff SDXL pipeline sharing ``base``'s text encoders, VAE and scheduler, with a
    UNetMotionModel: the base UNet's weights plus the motion adapter's temporal layers."""
    from diffusers import (
        AnimateDiffSDXLPipeline,
        MotionAdapter,
        UNet2DConditionModel,
        UNetMotionModel,
    )

    weights = _local_weights(config)
    # A fresh UNet from disk: the base's may carry PEFT LoRA layers, which from_unet2d cannot copy.
    unet2d = UNet2DConditionModel.from_pretrained(base_path, subfolder="unet", **weights)
    unet = UNetMotionModel.from_unet2d(unet2d, MotionAdapter.from_pretrained(adapter, **weights))
    # from_unet2d (diffusers 0.42) leaves SDXL's text-time embedding randomly initialised.
    unet.add_embedding.load_state_dict(unet2d.add_embedding.state_dict())
    # The adapter's weights now live in the UNet: not keeping it saves its memory. The explicit
    # dtype matters: from_pipe casts every shared module to float32 otherwise.
    pipe = AnimateDiffSDXLPipeline.from_pipe(
        base, unet=unet, motion_adapter=None, dtype=weights["dtype"]
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(config.device)


def load_unet_lora(pipe: Any, path: Path, name: str) -> None:
    """Only the UNet part of a LoRA: a motion pipeline's text encoders are its base's, which
    already hold the adapter."""
    state_dict, alphas, metadata = pipe.lora_state_dict(
        str(path), unet_config=pipe.unet.config, return_lora_metadata=True
    )
    pipe.load_lora_into_unet(
        state_dict, network_alphas=alphas, unet=pipe.unet, adapter_name=name, metadata=metadata
    )


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
    """A pipeline (a base or its motion pipeline) plus the adapters (name, weight) a style
    switches on in it."""

    pipe: Any
    adapters: tuple[tuple[str, float], ...]


class StylePipelines:
    """Base pipelines by model ref, loaded once; LoRAs loaded into them once as named adapters
    and switched per call (``set_adapters``), so changing style never reloads the base model.
    At most ``max_loras`` adapters stay loaded per base model; the least recently used go.
    A base's motion pipelines (AnimateDiff, one per motion module) carry the same adapters.

    Not thread-safe by itself: callers hold ``lock`` around ``style`` and any pipeline call.
    """

    def __init__(self, manager: ModelManager, config: DiffusionConfig, max_loras: int = 8) -> None:
        self.manager = manager
        self.config = config
        self.max_loras = max_loras
        self.lock = threading.RLock()
        self.base_loads = 0
        self.motion_loads = 0
        self._bases: dict[str, Any] = {}
        # base ref -> adapter name -> its LoRA file, least recently used first
        self._recent: dict[str, OrderedDict[str, Path]] = {}
        self._motions: dict[str, dict[str, Any]] = {}  # base ref -> motion ref -> pipeline
        self._img2img: dict[str, Any] = {}  # base ref -> the base as img2img

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
            self._motions[base_model_ref] = {}
            self.base_loads += 1
        return self._bases[base_model_ref]

    def motion(self, base_model_ref: str, motion_ref: str) -> Any:
        """The base as AnimateDiff with a motion module (a diffusers MotionAdapter folder), built
        once per pair, with the base's loaded LoRAs."""
        base = self.base(base_model_ref)
        motions = self._motions[base_model_ref]
        if motion_ref not in motions:
            path = self.manager.ensure(motion_ref)
            if not (path / "config.json").is_file():
                raise ModelNotFound(
                    f"motion module {motion_ref!r} must be a diffusers MotionAdapter folder "
                    "(config.json and safetensors)"
                )
            pipe = load_animatediff(base, self.manager.ensure(base_model_ref), path, self.config)
            for name, lora in self._recent[base_model_ref].items():
                load_unet_lora(pipe, lora, name)
            motions[motion_ref] = pipe
            self.motion_loads += 1
        return motions[motion_ref]

    def img2img(self, base_model_ref: str) -> Any:
        """The base as img2img, built once: ``from_pipe`` shares its modules, LoRA adapters
        included, so what ``activate`` switched on applies here too."""
        from diffusers import StableDiffusionXLImg2ImgPipeline

        if base_model_ref not in self._img2img:
            # from_pipe casts the shared modules to float32 unless told the configured dtype.
            pipe = StableDiffusionXLImg2ImgPipeline.from_pipe(
                self.base(base_model_ref), dtype=torch_dtype(self.config)
            )
            pipe.set_progress_bar_config(disable=True)
            self._img2img[base_model_ref] = pipe
        return self._img2img[base_model_ref]

    def style(
        self, base_model_ref: str, lora_ids: list[str], motion_ref: str | None = None
    ) -> LoadedStyle:
        """The base pipeline (or its motion pipeline for ``motion_ref``) with every LoRA of the
        set loaded (downloaded first if needed)."""
        pipe = self.base(base_model_ref)
        target = self.motion(base_model_ref, motion_ref) if motion_ref else pipe
        recent, motions = self._recent[base_model_ref], self._motions[base_model_ref]
        adapters = []
        for entry in lora_ids:
            ref, weight = parse_lora(entry)
            name = adapter_name(ref)
            if name not in recent:
                path = self.manager.ensure(ref)
                if path.suffix != ".safetensors":
                    raise ModelNotFound(f"LoRA {ref!r} must be a .safetensors file")
                pipe.load_lora_weights(str(path), adapter_name=name)
                for motion in motions.values():
                    load_unet_lora(motion, path, name)
                recent[name] = path
            recent.move_to_end(name)
            adapters.append((name, weight))
        in_use = {name for name, _ in adapters}
        for name in [n for n in recent if n not in in_use][: max(0, len(recent) - self.max_loras)]:
            pipe.delete_adapters([name])
            for motion in motions.values():
                motion.unet.delete_adapters(name)
            del recent[name]
        return LoadedStyle(target, tuple(adapters))

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


def _save_in_place(model: Any, dest: Path, marker: str) -> None:
    """``save_pretrained`` (safetensors) into a staging folder beside ``dest``, then rename it into
    place, unless another process finished first (``dest/marker`` exists)."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        staged = Path(tmp) / dest.name
        model.save_pretrained(staged, safe_serialization=True)
        if not (dest / marker).is_file():
            shutil.rmtree(dest, ignore_errors=True)
            staged.rename(dest)


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
            block_out_channels=TINY_UNET_BLOCKS,
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
        _save_in_place(pipe, dest, "model_index.json")
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


def build_tiny_motion_adapter(dest: Path, seed: int = 0) -> Path:
    """A diffusers MotionAdapter for the tiny UNet, random weights, saved as safetensors.

    Idempotent: an existing folder is kept. Written to a temp folder and renamed into place.
    """
    if (dest / "config.json").is_file():
        return dest
    import torch
    from diffusers import MotionAdapter

    torch.manual_seed(seed)
    adapter: Any = MotionAdapter(
        block_out_channels=TINY_UNET_BLOCKS,
        motion_layers_per_block=1,
        motion_num_attention_heads=4,
        motion_norm_num_groups=1,
        motion_max_seq_length=32,
        use_motion_mid_block=False,  # as SDXL motion adapters
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    _save_in_place(adapter, dest, "config.json")
    return dest


def build_tiny_models(models_dir: Path) -> list[Path]:
    """The tiny model, its tiny LoRAs and motion adapter (what `soul models tiny` and the tests
    build)."""
    base = build_tiny_sdxl(models_dir / TINY_MODEL)
    loras = [
        build_tiny_lora(models_dir / f"{tag}.safetensors", base, seed)
        for tag, seed in TINY_LORAS.items()
    ]
    return [base, *loras, build_tiny_motion_adapter(models_dir / TINY_MOTION)]
