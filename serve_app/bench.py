"""`soul bench hot|miss`: the service over HTTP side by side with its in-process floor.

Both sides run in the same invocation on the same machine, so the ratio is what to read;
absolute times on a shared 2-core box are noisy. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx

CUE = "penguin on a skateboard"
SOUL = "nova"
BENCH_ARGS: dict[str, Any] = {
    "renderer": {"steps": 8, "width": 128, "height": 128},
    "animator": {"frames": 8, "steps": 10, "strength": 0.3},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", choices=["hot", "miss"], help="hot: cache hits; miss: new renders")
    p.add_argument("--requests", type=int, default=None, help="measured requests per side")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP clients (hot)")
    p.add_argument("--out", default=None, help="JSON file (default: bench-<scenario>.json)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summarize(name: str, latencies_s: list[float], wall_s: float) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in latencies_s)
    return {
        "side": name,
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 3),
        "rps": round(len(ms) / wall_s, 1),
    }


async def timed_concurrently(
    calls: Sequence[Callable[[], Awaitable[None]]], concurrency: int
) -> tuple[list[float], float]:
    """Run ``calls`` with at most ``concurrency`` in flight; per-call latencies and wall time."""
    latencies: list[float] = []
    queue = list(reversed(calls))

    async def worker() -> None:
        while queue:
            call = queue.pop()
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - t0


async def http_hot(base: str, n: int, concurrency: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def get(user: str, expect: str = "hit") -> None:
            r = await client.get("/image", params={"soul_id": SOUL, "cue": CUE, "user_id": user})
            r.raise_for_status()
            assert r.json()["cache"] == expect, r.text

        await get("warm-0", expect="miss")  # renders the variant later users receive as a hit
        for i in range(1, 20):
            await get(f"warm-{i}")
        calls = [partial(get, f"http-{i}") for i in range(n)]
        return summarize("http (ingress -> catalog)", *await timed_concurrently(calls, concurrency))


async def inprocess_hot(data_dir: Path, n: int) -> dict[str, Any]:
    """The floor: the same catalog logic and URL signing, called directly on the same store."""
    from deployments.catalog import CatalogEngine
    from deployments.store import store_for
    from serve_app.objects import open_object_store
    from serve_app.settings import Settings

    settings = Settings(data_dir=data_dir)
    engine = CatalogEngine(store_for(settings))
    await engine.start([])
    objects = open_object_store(settings)

    async def get(user: str) -> None:
        lookup = await engine.lookup(SOUL, CUE, user)
        assert lookup is not None and lookup.claimed is not None
        objects.signed_url(lookup.claimed.storage_key, 60)

    calls = [partial(get, f"local-{i}") for i in range(n)]
    result = summarize("in-process (catalog engine)", *await timed_concurrently(calls, 1))
    await engine.close()
    return result


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
    from serve_app.models import TINY_MODEL
    from serve_app.schemas import AnimateJob, RenderJob

    models = data_dir / "models"
    renderer = RendererEngine(models, RendererConfig.model_validate(BENCH_ARGS["renderer"]))
    animator = AnimatorEngine(models, AnimatorConfig.model_validate(BENCH_ARGS["animator"]))
    gif = TranscoderConfig()
    pipe = renderer.load(TINY_MODEL)
    latencies = []
    t_all = time.perf_counter()
    for i in range(n + 1):
        t0 = time.perf_counter()
        job = RenderJob(
            style_id="s",
            base_model_ref=TINY_MODEL,
            prompt=f"creature {i}",
            negative_prompt="blurry",
            seed=i,
        )
        image = renderer.render(pipe, job)
        frames = animator.animate(
            image,
            AnimateJob(
                base_model_ref=TINY_MODEL, prompt=job.prompt, negative_prompt="blurry", seed=i
            ),
        )
        encode_gif(frames.pixels, gif.fps, gif.width)
        if i:  # the first one warms the pipelines up, as the HTTP side's warm-up does
            latencies.append(time.perf_counter() - t0)
        else:
            t_all = time.perf_counter()
    return summarize("in-process (render+animate+encode)", latencies, time.perf_counter() - t_all)


def print_table(title: str, rows: list[dict[str, Any]], ratio: dict[str, float]) -> None:
    print(f"\n{title}")
    print(f"{'side':<38}{'n':>6}{'p50 ms':>11}{'p95 ms':>11}{'req/s':>9}")
    for r in rows:
        print(f"{r['side']:<38}{r['n']:>6}{r['p50_ms']:>11.2f}{r['p95_ms']:>11.2f}{r['rps']:>9.1f}")
    for name, value in ratio.items():
        print(f"{name}: {value:.2f}")


def main(ns: argparse.Namespace) -> int:
    from serve_app.local import local_graph
    from serve_app.models import TINY_MODEL, build_tiny_sdxl

    n = ns.requests or (200 if ns.scenario == "hot" else 5)
    with tempfile.TemporaryDirectory(prefix="soul-bench-") as tmp:
        data_dir = Path(tmp)
        if ns.scenario == "miss":  # the floor first, while no replica competes for the cores
            build_tiny_sdxl(data_dir / "models" / TINY_MODEL)
            floor = inprocess_miss(data_dir, n)
        with local_graph(data_dir, port=free_port(), args=BENCH_ARGS, quiet=True) as base:
            if ns.scenario == "hot":
                http = asyncio.run(http_hot(base, n, ns.concurrency))
            else:
                http = asyncio.run(http_miss(base, n))
        if ns.scenario == "hot":  # the floor reads the catalog the HTTP side filled
            floor = asyncio.run(inprocess_hot(data_dir, n))
        ratio = {"p50 ratio http/in-process": http["p50_ms"] / floor["p50_ms"]}
    report = {
        "scenario": ns.scenario,
        "rows": [http, floor],
        **ratio,
        "concurrency": ns.concurrency if ns.scenario == "hot" else 1,
    }
    print_table(f"soul bench {ns.scenario}", [http, floor], ratio)
    out = Path(ns.out or f"bench-{ns.scenario}.json")
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0
