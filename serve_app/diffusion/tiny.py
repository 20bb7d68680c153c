"""Tiny test models, built from config with random weights and saved with ``save_pretrained``.

The tiny model has the SDXL architecture (two CLIP text encoders, a UNet with text-time
conditioning, a VAE) at a few MB: it makes abstract images, but it goes through exactly the
loading and inference code a real SDXL checkpoint does. Tiny LoRAs for it are real PEFT adapters
saved with diffusers' ``save_lora_weights``; the tiny motion adapter is a diffusers
``MotionAdapter`` that fits the tiny UNet. The tiny Stable Video Diffusion (image-to-video) has
SVD's architecture: a spatio-temporal UNet, a VAE with a temporal decoder and a CLIP vision
encoder. The tiny CLIP vision model is Dedupe's image encoder.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from serve_app.diffusion.pipelines import load_sdxl

TINY_MODEL = "tiny-sdxl"
TINY_LORAS = {"tiny-lora-pastel": 1, "tiny-lora-ink": 2}  # tag -> seed
TINY_MOTION = "tiny-motion"
TINY_VIDEO = "tiny-svd"
TINY_CLIP = "tiny-clip"
TINY_IP_ADAPTER = "tiny-ip-adapter"
IP_ADAPTER_WEIGHTS = "ip-adapter.safetensors"  # beside image_encoder/, as h94/IP-Adapter ships
TINY_UNET_BLOCKS = (32, 64)  # the tiny UNet's block_out_channels, one layer per block


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


def _save_in_place(dest: Path, marker: str, model: Any, *also: Any) -> None:
    """``save_pretrained`` (safetensors) of ``model`` and ``also`` (its processor, say) into a
    staging folder beside ``dest``, then rename it into place, unless another process finished
    first (``dest/marker`` exists)."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        staged = Path(tmp) / dest.name
        model.save_pretrained(staged, safe_serialization=True)
        for part in also:
            part.save_pretrained(staged)
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
        _save_in_place(dest, "model_index.json", pipe)
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
    _save_in_place(dest, "config.json", adapter)
    return dest


def build_tiny_svd(dest: Path, seed: int = 0) -> Path:
    """A Stable Video Diffusion pipeline built from config (random weights), saved as
    safetensors. Idempotent: an existing folder is kept."""
    if (dest / "model_index.json").is_file():
        return dest
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=8,  # the noisy latents and the conditioning image's latents
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=4,
        projection_class_embeddings_input_dim=96,  # three added time ids of 32
        addition_time_embed_dim=32,
    )
    vae = AutoencoderKLTemporalDecoder(  # three blocks: latents at a quarter of the size
        block_out_channels=[32, 32, 64],
        down_block_types=["DownEncoderBlock2D"] * 3,
        latent_channels=4,
    )
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,  # what the pipeline resizes the image to for its encoder
            intermediate_size=37,
            patch_size=32,
        )
    )
    scheduler = EulerDiscreteScheduler(  # SVD's own schedule: v-prediction, Karras sigmas
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    pipe = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    _save_in_place(dest, "model_index.json", pipe)
    return dest


def build_tiny_clip(dest: Path, seed: int = 0) -> Path:
    """A CLIP vision model with its projection (Dedupe's image encoder), built from config with
    random weights and saved as safetensors with its image processor. Idempotent.

    It sees the picture at 16x16 in one patch, so its embedding is close to a random projection
    of the downscaled picture: the layout stays, pixel noise goes. A re-encoded copy embeds
    near its original, another seed's render does not (``soul bench dedupe`` measures how
    near); a real CLIP also knows what the picture shows."""
    if (dest / "preprocessor_config.json").is_file():
        return dest
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=256,
        projection_dim=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=512,
        image_size=16,
        patch_size=16,
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    model = CLIPVisionModelWithProjection(config)
    _save_in_place(
        dest, "preprocessor_config.json", model, CLIPImageProcessor(size=16, crop_size=16)
    )
    return dest


def build_tiny_ip_adapter(dest: Path, base: Path, seed: int = 0) -> Path:
    """An IP-Adapter for the tiny model (image projection + one key/value pair per cross-
    attention, in diffusers' ``load_ip_adapter`` safetensors layout) with its image encoder (a
    tiny CLIP vision model) in ``image_encoder/``; random weights, built from config. Idempotent.

    Its weights are large enough that conditioning visibly moves a render: what it can show is
    the wiring (per-reference, per-strength changes), not likeness."""
    if (dest / IP_ADAPTER_WEIGHTS).is_file():
        return dest
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    unet: Any = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base / "unet"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        staged = Path(tmp) / dest.name
        encoder = build_tiny_clip(staged / "image_encoder", seed)
        embed_dim = json.loads((encoder / "config.json").read_text())["projection_dim"]
        cross = unet.config.cross_attention_dim
        generator = torch.Generator().manual_seed(seed)
        weights = {
            "image_proj.proj.weight": torch.randn(4 * cross, embed_dim, generator=generator),
            "image_proj.proj.bias": torch.zeros(4 * cross),
            "image_proj.norm.weight": torch.ones(cross),
            "image_proj.norm.bias": torch.zeros(cross),
        }
        key_id = 1  # diffusers numbers the cross-attention processors 1, 3, 5, ...
        for name in unet.attn_processors:
            if name.endswith("attn1.processor"):
                continue
            hidden = unet.get_submodule(name.removesuffix(".processor")).to_k.out_features
            for part in ("to_k_ip", "to_v_ip"):
                weights[f"ip_adapter.{key_id}.{part}.weight"] = torch.randn(
                    hidden, cross, generator=generator
                )
            key_id += 2
        save_file(weights, str(staged / IP_ADAPTER_WEIGHTS))
        if not (dest / IP_ADAPTER_WEIGHTS).is_file():
            shutil.rmtree(dest, ignore_errors=True)
            staged.rename(dest)
    return dest


def build_tiny_models(models_dir: Path) -> list[Path]:
    """The tiny model, its tiny LoRAs and motion adapter, the tiny SVD, the tiny CLIP and the
    tiny IP-Adapter, the tiny upscalers (what `soul models tiny` and the tests build)."""
    base = build_tiny_sdxl(models_dir / TINY_MODEL)
    loras = [
        build_tiny_lora(models_dir / f"{tag}.safetensors", base, seed)
        for tag, seed in TINY_LORAS.items()
    ]
    motion = build_tiny_motion_adapter(models_dir / TINY_MOTION)
    from serve_app.upscale.weights import build_tiny_upscalers

    video = build_tiny_svd(models_dir / TINY_VIDEO)
    clip = build_tiny_clip(models_dir / TINY_CLIP)
    adapter = build_tiny_ip_adapter(models_dir / TINY_IP_ADAPTER, base)
    upscalers = build_tiny_upscalers(models_dir)
    return [base, *loras, motion, video, clip, adapter, *upscalers]
