"""`soul bench miss`: a full miss over HTTP next to render+animate+encode in-process."""

from __future__ import annotations

import asyncio
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from serve_app.bench.common import BENCH_ARGS, SOUL, free_port, summarize, timed_concurrently


async def http_miss(base: str, n: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:

        async def get(cue: str) -> None:
            r = await client.get("/image", params={"soul_id": SOUL, "cue": cue, "user_id": "u"})
            r.raise_for_status()
            assert r.json()["cache"] == "miss", r.text

        await get("warmup lighthouse")
        run = time.time_ns()
        calls = [partial(get, f"creature number {i} {run}") for i in range(n)]
        return summarize("http (full graph, miss)", *await timed_concurrently(calls, 1))


def inprocess_miss(data_dir: Path, n: int) -> dict[str, Any]:
    """The floor: render + animate + GIF encode, called directly with the same settings."""
    from deployments.animator import AnimatorConfig, AnimatorEngine
    from deployments.renderer import RendererConfig, RendererEngine
    from deployments.transcoder import TranscoderConfig, encode_gif
    from serve_app.diffusion.sources import ModelManager
    from serve_app.diffusion.tiny import TINY_LORAS, TINY_MODEL
    from serve_app.schemas import AnimateJob, RenderJob

    models = ModelManager(data_dir / "models")
    renderer = RendererEngine(models, RendererConfig.model_validate(BENCH_ARGS["renderer"]))
    animator = AnimatorEngine(models, AnimatorConfig.model_validate(BENCH_ARGS["animator"]))
    gif = TranscoderConfig()
    loras = [next(iter(TINY_LORAS))]  # the soul's set, as in config/souls.yaml
    latencies = []
    t_all = time.perf_counter()
    for i in range(n + 1):
        t0 = time.perf_counter()
        job = RenderJob(
            style_id="s",
            base_model_ref=TINY_MODEL,
            lora_ids=loras,
            prompt=f"creature {i}",
            negative_prompt="blurry",
            seed=i,
        )
        image = renderer.render(job)
        frames = animator.animate(
            image,
            AnimateJob(
                base_model_ref=TINY_MODEL,
                lora_ids=loras,
                prompt=job.prompt,
                negative_prompt="blurry",
                seed=i,
            ),
        )
        encode_gif(frames.pixels, gif.fps, gif.width)
        if i:  # the first one warms the pipelines up, as the HTTP side's warm-up does
            latencies.append(time.perf_counter() - t0)
        else:
            t_all = time.perf_counter()
    return summarize("in-process (render+animate+encode)", latencies, time.perf_counter() - t_all)


def miss_main(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The floor and the HTTP side, on one scratch data directory: (http, floor) rows."""
    from serve_app.diffusion.tiny import build_tiny_models
    from serve_app.local import local_graph

    with tempfile.TemporaryDirectory(prefix="soul-bench-") as tmp:
        data_dir = Path(tmp)
        # the floor first, while no replica competes for the cores
        build_tiny_models(data_dir / "models")
        floor = inprocess_miss(data_dir, n)
        with local_graph(data_dir, port=free_port(), args=BENCH_ARGS, quiet=True) as base:
            http = asyncio.run(http_miss(base, n))
    return http, floor
