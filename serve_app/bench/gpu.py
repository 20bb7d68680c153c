"""`soul bench gpu`: what a GPU renders, in one command, without downloading a checkpoint.

Builds full-size SDXL (both text encoders, the UNet, the VAE), the AnimateDiff SDXL motion
module and IP-Adapter SDXL from their published configs with random weights directly on the
device in fp16 (``serve_app/diffusion/random_weights.py``), then times, each row after one
warm-up call:

1. cold: build everything, then the first image (batch 1): a new replica's time to first image
2. text to image at the configured size and steps (1024² x 30, classifier-free guidance) at
   batch 1, 2 and 4: PyTorch SDPA as it comes; then (after 3 and 4, which take the plain
   UNet) with channels-last and fused QKV
3. IP-Adapter conditioning (the image encoder and the extra attention) at batch 1
4. an AnimateDiff clip (8 frames)
5. xformers (when installed) and ``torch.compile`` (its compile time apart) at batch 1
6. a x2 upscale of a rendered-size still (1024→2048): Real-ESRGAN's RRDBNet at its published
   size, over the Upscaler's tiles at its default tile, overlap and tile batch

Each row gives seconds per call, images per second, renders per GPU-hour and the peak device
memory. ``--size tiny`` runs the same code on the tiny architecture (a CPU, seconds; fp32, and
``torch.compile`` with the ``aot_eager`` backend: graph capture without code generation).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from deployments.upscaler import UpscalerConfig
from serve_app.bench.common import write_report
from serve_app.diffusion.random_weights import (
    SDXLParts,
    add_ip_adapter,
    build_sdxl,
    load_config,
    motion_unet,
)
from serve_app.upscale.archs import RRDBNet
from serve_app.upscale.tiling import upscale_tiled
from serve_app.upscale.weights import tiny_network


class Clock:
    """Wall time and peak device memory of one call (the device synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def measure(self, into: dict[str, Any]) -> Iterator[None]:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        into["seconds"] = round(time.perf_counter() - t0, 3)
        if self.device.type == "cuda":
            into["peak_mib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20)


def text_embeddings(parts: SDXLParts, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both encoders over random token ids, a negative and a positive prompt per image:
    (hidden states of both, concatenated; the second one's pooled projection)."""
    ids = torch.randint(0, parts.text_encoder.config.vocab_size, (2 * batch, 77))
    ids = ids.to(parts.device)
    first = parts.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    second = parts.text_encoder_2(ids, output_hidden_states=True)
    return torch.cat([first, second.hidden_states[-2]], dim=-1), second.text_embeds


@torch.inference_mode()
def generate(
    parts: SDXLParts,
    unet: Any,
    batch: int,
    steps: int,
    frames: int | None = None,
    image_encoder: Any = None,
) -> torch.Tensor:
    """One text-to-image (or, with ``frames``, text-to-video) call: encode, denoise with
    guidance, decode. The images, as the VAE gives them."""
    render = parts.config["render"]
    height, width = render["height"], render["width"]
    embeds, pooled = text_embeddings(parts, batch)
    time_ids = torch.tensor([[height, width, 0, 0, height, width]] * 2 * batch)
    added: dict[str, Any] = {
        "text_embeds": pooled,
        "time_ids": time_ids.to(parts.device, parts.dtype),
    }
    if image_encoder is not None:
        size = image_encoder.config.image_size
        pixels = torch.randn(batch, 3, size, size, device=parts.device, dtype=parts.dtype)
        image = image_encoder(pixels).image_embeds
        added["image_embeds"] = [torch.cat([torch.zeros_like(image), image])[:, None]]
    if frames:  # the motion UNet attends per frame (the pipeline repeats them the same way)
        embeds = embeds.repeat_interleave(frames, dim=0)
    shape = (batch, 4, *((frames,) if frames else ()), height // 8, width // 8)
    scheduler = parts.scheduler
    scheduler.set_timesteps(steps, device=parts.device)
    latents = torch.randn(shape, device=parts.device, dtype=parts.dtype)
    latents = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        noise = unet(model_input, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
        uncond, cond = noise.chunk(2)
        noise = uncond + render["guidance"] * (cond - uncond)
        latents = scheduler.step(noise, t, latents).prev_sample
    if frames:  # (batch, channels, frames, h, w) -> one image per frame, decoded 4 at a time
        latents = latents.permute(0, 2, 1, 3, 4).flatten(0, 1)
    scale = parts.vae.config.scaling_factor
    return torch.cat([parts.vae.decode(chunk / scale).sample for chunk in latents.split(4)])


def _row(
    clock: Clock, name: str, batch: int, call: Callable[[], Any], warm: Callable[[], Any]
) -> dict[str, Any]:
    """Warm up, then time one call; images/s and renders per GPU-hour from it."""
    warm()
    row: dict[str, Any] = {"row": name, "batch": batch}
    with clock.measure(row):
        call()
    row["images_per_s"] = round(batch / row["seconds"], 3)
    row["renders_per_gpu_hour"] = round(3600 * batch / row["seconds"])
    return row


def run_all(size: str, device: torch.device) -> dict[str, Any]:
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    config = load_config(size)
    render = config["render"]
    steps, clock = render["steps"], Clock(device)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()

    cold: dict[str, Any] = {"row": "cold: build on the device + first image", "batch": 1}
    with clock.measure(cold):
        parts = build_sdxl(config, device, dtype)
        built_s = time.perf_counter() - started
        generate(parts, parts.unet, 1, steps)
    cold["build_seconds"] = round(built_s, 3)
    rows.append(cold)

    def t2i(label: str, batch: int, unet: Any, encoder: Any = None) -> None:
        rows.append(
            _row(
                clock,
                f"{label}, batch {batch}",
                batch,
                lambda: generate(parts, unet, batch, steps, image_encoder=encoder),
                lambda: generate(parts, unet, batch, 1, image_encoder=encoder),
            )
        )

    for batch in (1, 2, 4):
        t2i("SDPA", batch, parts.unet)
    encoder = add_ip_adapter(parts)
    t2i("IP-Adapter (image encoder + its attention)", 1, parts.unet, encoder)
    del encoder

    rows.append(_clip(clock, parts, steps, render["frames"]))
    parts.unet.to(memory_format=torch.channels_last)
    parts.vae.to(memory_format=torch.channels_last)
    parts.unet.fuse_qkv_projections()
    parts.vae.fuse_qkv_projections()
    for batch in (1, 2, 4):
        t2i("SDPA + channels-last + fused QKV", batch, parts.unet)
    if device.type == "cuda" and importlib.util.find_spec("xformers") is not None:
        parts.unet.enable_xformers_memory_efficient_attention()
        t2i("xformers + channels-last", 1, parts.unet)
        _sdpa(parts.unet)
        parts.unet.fuse_qkv_projections()
    rows.append(_compiled(clock, parts, steps))
    rows.append(_upscale(clock, size, render["width"], device, dtype))

    return {
        "scenario": "gpu",
        "size": size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "render": render,
        "torch": torch.__version__,
        "rows": rows,
        "total_seconds": round(time.perf_counter() - started, 1),
    }


def _clip(clock: Clock, parts: SDXLParts, steps: int, frames: int) -> dict[str, Any]:
    """An AnimateDiff clip; its motion UNet is freed with the row."""
    video = motion_unet(_without_ip_adapter(parts))
    return _row(
        clock,
        f"AnimateDiff clip of {frames} frames (a render: a clip)",
        1,
        lambda: generate(parts, video, 1, steps, frames=frames),
        lambda: generate(parts, video, 1, 1, frames=frames),
    )


def _compiled(clock: Clock, parts: SDXLParts, steps: int) -> dict[str, Any]:
    """``torch.compile`` of the UNet: the first call (compiling) timed apart from the next."""
    backend = "inductor" if parts.device.type == "cuda" else "aot_eager"
    compiled = torch.compile(parts.unet, backend=backend)
    first: dict[str, Any] = {}
    with clock.measure(first):
        generate(parts, compiled, 1, 1)
    row = _row(
        clock,
        f"torch.compile ({backend}) + channels-last + fused QKV, batch 1",
        1,
        lambda: generate(parts, compiled, 1, steps),
        lambda: None,
    )
    row["compile_seconds"] = first["seconds"]
    return row


def _upscale(
    clock: Clock, size: str, side: int, device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    """A rendered still upscaled x2 by RRDBNet (Real-ESRGAN x2plus's size when full) on tiles."""
    network = RRDBNet(scale=2) if size == "full" else tiny_network("rrdb", 2)
    network = network.to(device, dtype).eval()
    still = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    tiles = UpscalerConfig(models=["bench"])

    def upscale() -> None:
        with torch.inference_mode():
            upscale_tiled(
                network,
                2,
                [still],
                tile=tiles.tile,
                overlap=tiles.overlap,
                batch=tiles.tile_batch,
                device=device.type,
                dtype=dtype,
            )

    return _row(clock, f"upscale x2 (RRDBNet, tiled) {side}→{2 * side}", 1, upscale, upscale)


def _without_ip_adapter(parts: SDXLParts) -> SDXLParts:
    """The motion module takes the plain UNet: the IP-Adapter's processors and projection go."""
    unet = parts.unet
    _sdpa(unet)
    unet.encoder_hid_proj = None
    unet.register_to_config(encoder_hid_dim_type=None)
    return parts


def _sdpa(unet: Any) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())


def print_gpu_table(report: dict[str, Any]) -> None:
    print(f"\nsoul bench gpu ({report['size']}, {report['device']}, {report['dtype']}, "
          f"{report['render']['width']}x{report['render']['height']}, "
          f"{report['render']['steps']} steps)")  # fmt: skip
    print(f"{'row':<62}{'s/call':>9}{'img/s':>8}{'per GPU-h':>11}{'peak MiB':>10}")
    for r in report["rows"]:
        per_hour = r.get("renders_per_gpu_hour", "")
        print(f"{r['row']:<62}{r['seconds']:>9.2f}{r.get('images_per_s', ''):>8}"
              f"{per_hour:>11}{r.get('peak_mib', '-'):>10}")  # fmt: skip
    print(f"total: {report['total_seconds']} s")


def gpu_main(ns: argparse.Namespace) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() and ns.size == "full" else "cpu")
    if ns.size == "full" and device.type != "cuda":
        print("soul bench gpu: no CUDA device here; `--size tiny` runs the same code on a CPU")
        return 2
    report = run_all(ns.size, device)
    print_gpu_table(report)
    write_report(ns, report)
    return 0
