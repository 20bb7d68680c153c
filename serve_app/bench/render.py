"""`soul bench render`: LoRA hot-swap vs reload, style switches and encode formats."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.bench.common import BENCH_ARGS, print_table, summarize, write_report

ENCODE_RUNS = 5  # encode_formats: runs per format, the median is reported


def _synthetic_frames(count: int, size: int) -> np.ndarray:
    """Deterministic, image-like RGB frames: drifting smooth gradients, a disc and a shadow bar
    moving across them, and light grain (renders are never perfectly flat)."""
    y, x = np.mgrid[0:size, 0:size] / size
    grain = np.random.default_rng(0).normal(0, 3, (count, size, size, 3))
    clip = []
    for i in range(count):
        t = i / count
        rgb = np.stack(
            [0.5 + 0.5 * np.sin(2 * np.pi * (x + t)), y, 0.5 + 0.5 * np.cos(np.pi * (x * y + t))],
            axis=-1,
        )
        rgb[(x - 0.2 - 0.6 * t) ** 2 + (y - 0.5) ** 2 < 0.02] = (1.0, 0.85, 0.2)
        rgb[np.abs(y - t) < 0.04] *= 0.4
        clip.append(rgb * 255 + grain[i])
    return np.clip(clip, 0, 255).astype(np.uint8)


def encode_formats(frames: int = 12, width: int = 512) -> list[dict[str, Any]]:
    """Encode time (median of ENCODE_RUNS) and size of one width x width clip in each format,
    at the Transcoder's default fps: the palette GIF it writes, a plain GIF (the GIF encoder's
    fixed rgb8 palette, no palettegen: the naive path), animated WebP and MP4."""
    from deployments.transcoder import ENCODINGS, TranscoderConfig, encode_frames

    clip = _synthetic_frames(frames, width)
    fps = TranscoderConfig().fps
    encodings = {
        "gif (palettegen)": ENCODINGS["gif"],
        "gif (plain, rgb8)": replace(ENCODINGS["gif"], pix_fmt="rgb8"),
        **{f"{fmt} ({ENCODINGS[fmt].codec})": ENCODINGS[fmt] for fmt in ("webp", "mp4")},
    }
    rows = []
    for name, encoding in encodings.items():
        times, data = [], b""
        for _ in range(ENCODE_RUNS):
            t0 = time.perf_counter()
            data = encode_frames(clip, fps, width, encoding)
            times.append(time.perf_counter() - t0)
        ms = round(statistics.median(times) * 1000, 1)
        rows.append({"name": name, "ms": ms, "bytes": len(data)})
    return rows


def style_switching(models_dir: Path, n: int) -> dict[str, Any]:
    """LoRA hot-swap vs full reload, and render latency with and without style switches, on one
    in-process renderer (what one multiplexed replica does), tiny model at the bench settings."""
    from deployments.renderer import RendererConfig, RendererEngine
    from serve_app.diffusion.pipelines import StylePipelines
    from serve_app.diffusion.sources import ModelManager
    from serve_app.diffusion.tiny import TINY_LORAS, TINY_MODEL
    from serve_app.schemas import RenderJob

    pastel, ink = (str(models_dir / f"{tag}.safetensors") for tag in TINY_LORAS)
    config = RendererConfig.model_validate(BENCH_ARGS["renderer"])
    manager = ModelManager(models_dir)

    def median_ms(
        action: Callable[[StylePipelines], Any], loaded: list[list[str]], runs: int
    ) -> float:
        """``action`` timed on a replica that has loaded the ``loaded`` LoRA sets (the last one
        active); nothing loaded: a fresh replica."""
        times = []
        for _ in range(runs):
            pipelines = StylePipelines(manager, config)
            for lora_ids in loaded:
                pipelines.activate(pipelines.style(TINY_MODEL, lora_ids))
            t0 = time.perf_counter()
            action(pipelines)
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times) * 1000, 2)

    def to_pastel(pipelines: StylePipelines) -> None:
        pipelines.activate(pipelines.style(TINY_MODEL, [pastel]))

    swap = [
        {
            "name": "hot swap to a loaded style (set_adapters)",
            "ms": median_ms(to_pastel, [[pastel], [f"{ink}=0.8"]], runs=10),
        },
        {
            "name": "hot swap to a new LoRA (load into the base)",
            "ms": median_ms(to_pastel, [[f"{ink}=0.8"]], runs=5),
        },
        {
            "name": "full reload (base + LoRA from disk)",
            "ms": median_ms(to_pastel, [], runs=5),
        },
    ]
    engine = RendererEngine(manager, config)
    jobs = [
        RenderJob(
            style_id=str(i),
            base_model_ref=TINY_MODEL,
            lora_ids=loras,
            prompt="penguin",
            negative_prompt="",
            seed=i,
        )
        for i, loras in enumerate([[pastel], [f"{ink}=0.8"]])
    ]
    for job in jobs:
        engine.render(job)  # both styles loaded, as on a replica that holds both
    renders = []
    for name, sequence in [("same style", [jobs[0]] * n), ("alternating styles", jobs * (n // 2))]:
        latencies = []
        for job in sequence:
            t0 = time.perf_counter()
            engine.render(job)
            latencies.append(time.perf_counter() - t0)
        renders.append(summarize(f"render, {name}", latencies, sum(latencies)))
    return {"swap": swap, "render": renders}


def render_main(ns: argparse.Namespace) -> int:
    from serve_app.diffusion.tiny import build_tiny_models

    n = ns.requests or 20
    with tempfile.TemporaryDirectory(prefix="soul-bench-") as tmp:
        models_dir = Path(tmp) / "models"
        build_tiny_models(models_dir)
        switching = style_switching(models_dir, n)
        encode = encode_formats()
    swap, renders = switching["swap"], switching["render"]
    print("\nsoul bench render: one renderer replica, tiny SDXL, bench settings")
    for row in swap:
        print(f"{row['name']:<46}{row['ms']:>10.2f} ms")
    print(f"full reload / hot swap to a loaded style: {swap[2]['ms'] / swap[0]['ms']:.0f}x")
    ratio = {"p50 ratio alternating/same": renders[1]["p50_ms"] / renders[0]["p50_ms"]}
    print_table("render latency on one replica", renders, ratio)
    print("\nencode: 12 frames at 512 px")
    for row in encode:
        print(f"{row['name']:<30}{row['ms']:>10.1f} ms{row['bytes']:>12,} bytes")
    print(
        "\nfull-size SDXL on a GPU: not measured here (no accelerator on this machine); the "
        "published baseline is about 2.5 s for 1024x1024, 30 steps, fp16 on an H100."
    )
    report = {"scenario": "render", "style_switching": switching, "encode": encode}
    write_report(ns, report)
    return 0
