"""`soul bench miss`: a full miss over HTTP next to its in-process floor, stage by stage.

The floor runs, in this process and in order, the engines the graph's boxes wrap: render, pHash
check, animate, encode and write the variant's objects. Both sides time their stages with the
same histograms (``STAGES``): the floor keeps them as it records them (``metrics.tapped``), the
HTTP side adds up the values its replicas logged (at DEBUG: Ray's Prometheus export has only
the buckets' midpoints) during its misses. What a miss takes besides its stages is its
remainder; over HTTP, the replicas' own timing of their calls says what it went to (``CALLS``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from ray.serve import Deployment

from serve_app.bench.common import (
    BENCH_ARGS,
    SOUL,
    free_port,
    print_table,
    summarize,
    timed_concurrently,
    write_report,
)
from serve_app.settings import Settings

STAGES = {  # a stage of a miss: the histogram that times it, on both sides
    "render": "soul_render_ms",
    "dedupe (pHash)": "soul_dedupe_ms",
    "animate": "soul_animate_ms",
    "encode (GIF)": "soul_transcode_ms",
    "store (objects written)": "soul_store_ms",
}


# What a miss's remainder goes to, as the replicas time each call (Serve's "CALL <method> OK"
# lines): the catalog's reads and writes, the embedding, and the boxes' own work outside their
# stages (the render turned into frames, the cover PNG, the sidecar); the rest of it is the
# hops, Frames through Ray's object store and the Ingress's own code.
CALLS = {
    "catalog calls": (
        "Catalog.lookup",
        "Catalog.resolve_similar",
        "Catalog.claim_unseen",
        "Catalog.try_lock",
        "Catalog.list_variants",
        "Catalog.users_lacking_unseen",
        "Catalog.put_variant",
        "Catalog.unlock",
    ),
    "embedding": ("Embedder.embed",),
    "boxes, outside stages": (
        "Renderer.render",
        "Dedupe.check",
        "Animator.animate",
        "Transcoder.encode",
    ),
}
HOPS = "hops, transfers, ingress"
_CALL = re.compile(r"CALL (\w+) OK ([\d.]+)ms")


def stages_ms(sums_ms: dict[str, float], latencies_s: list[float]) -> dict[str, float]:
    """Milliseconds per miss of each stage, of the rest (``remainder``), what it went to where
    ``sums_ms`` has the replicas' calls, and of it all (mean)."""
    n = len(latencies_s)
    stages = {stage: sums_ms.get(metric, 0.0) / n for stage, metric in STAGES.items()}
    total = statistics.fmean(latencies_s) * 1000
    remainder = total - sum(stages.values())
    calls = {part: sum(sums_ms.get(c, 0.0) for c in names) / n for part, names in CALLS.items()}
    if calls["boxes, outside stages"]:  # the graph's side: its boxes timed each call
        calls["boxes, outside stages"] -= sum(stages.values())
    else:  # in-process, the remainder is all in the engines
        calls["boxes, outside stages"] = remainder
    parts = {f"remainder: {part}": ms for part, ms in calls.items()}
    parts[f"remainder: {HOPS}"] = remainder - sum(calls.values())
    breakdown = {**stages, "remainder": remainder, **parts, "total (mean)": total}
    return {name: round(ms, 1) for name, ms in breakdown.items()}


def logged_ms(logs_dir: Path, stored: int, timeout_s: float = 30) -> dict[str, float]:
    """Milliseconds by stage metric (``metrics.observe`` at DEBUG) and by call (``CALLS``) that
    the replicas logged so far, once ``stored`` variants have been written."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = [
            json.loads(raw)
            for path in sorted(logs_dir.glob("replica_*.log"))
            for raw in path.read_text().splitlines()
            if raw.startswith("{")
        ]
        written = sum(r.get("metric") == "soul_store_ms" for r in records)
        if written >= stored or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert written == stored, f"{written} stored variants logged, {stored} expected"
    sums = dict.fromkeys([*STAGES.values(), *(c for names in CALLS.values() for c in names)], 0.0)
    for r in records:
        if r.get("metric") in sums:
            sums[r["metric"]] += r["value"]
        elif call := _CALL.fullmatch(r.get("message", "")):
            name = f"{r['deployment'].split('_', 1)[-1]}.{call[1]}"  # soul_Catalog: Catalog
            if name in sums:
                sums[name] += float(call[2])
    return sums


async def http_miss(base: str, logs_dir: Path, n: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:

        async def get(cue: str) -> None:
            r = await client.get("/image", params={"soul_id": SOUL, "cue": cue, "user_id": "u"})
            r.raise_for_status()
            assert r.json()["cache"] == "miss", r.text

        await get("warmup lighthouse")
        before = await asyncio.to_thread(logged_ms, logs_dir, 1)
        run = time.time_ns()
        calls = [partial(get, f"creature number {i} {run}") for i in range(n)]
        latencies, wall_s = await timed_concurrently(calls, 1)
        after = await asyncio.to_thread(logged_ms, logs_dir, 1 + n)
    row = summarize("http (full graph, miss)", latencies, wall_s)
    sums = {name: after[name] - before[name] for name in after}
    return {**row, "stages_ms": stages_ms(sums, latencies)}


def replica_torch_threads(settings: Settings, deployment: object) -> int:
    """A replica's torch intra-op threads: ``torch_threads``, else Ray's OMP_NUM_THREADS for
    the actor (its CPUs rounded down, at least 1: 1 for the Renderer and Animator's 0.5)."""
    if not isinstance(deployment, Deployment):  # type checkers see the decorated class
        raise TypeError(f"{deployment!r} is not a Serve deployment")
    cpus = (deployment.ray_actor_options or {}).get("num_cpus", 1)
    return settings.models.torch_threads or max(1, math.floor(cpus))


def inprocess_miss(data_dir: Path, n: int) -> dict[str, Any]:
    """The floor: the boxes' engines called directly, in order, with the same settings, torch's
    threads included (the Animator runs on as many CPUs as the Renderer)."""
    import torch

    from deployments.animator import AnimatorConfig, AnimatorEngine
    from deployments.dedupe import DedupeEngine
    from deployments.renderer import Renderer, RendererConfig, RendererEngine
    from deployments.transcoder import TranscoderEngine
    from serve_app.diffusion.sources import ModelManager
    from serve_app.diffusion.tiny import TINY_LORAS, TINY_MODEL
    from serve_app.metrics import tapped
    from serve_app.schemas import AnimateJob, EncodeJob, RenderJob
    from serve_app.storage import open_object_store

    settings = Settings(data_dir=data_dir)
    threads = replica_torch_threads(settings, Renderer)
    torch.set_num_threads(threads)
    models = ModelManager(data_dir / "models")
    renderer = RendererEngine(models, RendererConfig.model_validate(BENCH_ARGS["renderer"]))
    animator = AnimatorEngine(models, AnimatorConfig.model_validate(BENCH_ARGS["animator"]))
    dedupe = DedupeEngine()
    transcoder = TranscoderEngine(open_object_store(settings))
    loras = [next(iter(TINY_LORAS))]  # the soul's set, as in config/souls.yaml
    latencies: list[float] = []
    sums: dict[str, float] = {}
    t_all = time.perf_counter()
    for i in range(n + 1):
        with tapped() as observed:
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
            verdict = dedupe.check(image, [])
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
            sidecar = {"seed": i, "phash": verdict.phash}
            transcoder.encode(frames, EncodeJob(storage_stem=f"bench/miss/{i}", sidecar=sidecar))
            elapsed = time.perf_counter() - t0
        if not i:  # the first one warms the pipelines up, as the HTTP side's warm-up does
            t_all = time.perf_counter()
            continue
        latencies.append(elapsed)
        for metric in STAGES.values():
            sums[metric] = sums.get(metric, 0.0) + sum(observed.get(metric, []))
    side = f"in-process (the boxes' engines, {threads} thread{'s' * (threads > 1)})"
    row = summarize(side, latencies, time.perf_counter() - t_all)
    return {**row, "stages_ms": stages_ms(sums, latencies)}


def miss_main(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The floor and the HTTP side, on one scratch data directory: (http, floor) rows, each with
    its ``stages_ms``."""
    from serve_app.diffusion.tiny import build_tiny_models
    from serve_app.local import local_graph

    with tempfile.TemporaryDirectory(prefix="soul-bench-") as tmp:
        data_dir = Path(tmp)
        # the floor first, while no replica competes for the cores
        build_tiny_models(data_dir / "models")
        floor = inprocess_miss(data_dir, n)
        logs_dir = data_dir / "logs"  # the replicas' JSON lines, each stage's among them
        logging = {"encoding": "JSON", "log_level": "DEBUG", "logs_dir": str(logs_dir)}
        args = {**BENCH_ARGS, "logging": logging}
        graph = local_graph(data_dir, port=free_port(), args=args, quiet=True)
        with graph as base:
            http = asyncio.run(http_miss(base, logs_dir, n))
    return http, floor


def run(ns: argparse.Namespace) -> int:
    """The HTTP side next to its in-process floor, stage by stage; the table and the JSON."""
    http, floor = miss_main(ns.requests or 5)
    ratio = {"p50 ratio http/in-process": http["p50_ms"] / floor["p50_ms"]}
    print_table("soul bench miss", [http, floor], ratio)
    print_stages(http, floor)
    write_report(ns, {"scenario": "miss", "rows": [http, floor], **ratio, "concurrency": 1})
    return 0


def print_stages(http: dict[str, Any], floor: dict[str, Any]) -> None:
    """The rows' ``stages_ms`` side by side, with what the HTTP side adds to each."""
    print(f"\n{'ms per request (mean)':<46}{'http':>11}{'in-process':>11}{'added':>11}")
    for stage, ms in http["stages_ms"].items():
        base = floor["stages_ms"][stage]
        print(f"{stage:<46}{ms:>11.1f}{base:>11.1f}{ms - base:>+11.1f}")
