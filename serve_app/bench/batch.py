"""`soul bench batch`: renders/s of one Renderer replica at 1, 2, 4 and 8 concurrent renders of
different cues in one style, batched (``@serve.batch``) next to unbatched, through Serve."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from serve_app.bench.common import (
    BENCH_ARGS,
    free_port,
    print_table,
    summarize,
    timed_concurrently,
    write_report,
)

CONCURRENCY = (1, 2, 4, 8)
BATCHED = 8  # max_batch_size of the batched side; the unbatched side runs 1


STYLE = "bench-style"


async def renders_at(renderer: Any, concurrency: int, n: int) -> dict[str, Any]:
    """``n`` renders of distinct prompts and seeds, ``concurrency`` at a time, through the
    ``renderer`` handle."""
    from serve_app.diffusion.tiny import TINY_LORAS, TINY_MODEL
    from serve_app.schemas import RenderJob

    async def render(i: int) -> None:
        job = RenderJob(
            style_id=STYLE,
            base_model_ref=TINY_MODEL,
            lora_ids=[next(iter(TINY_LORAS))],
            prompt=f"creature number {i}, concurrency {concurrency}",
            negative_prompt="blurry",
            seed=i,
        )
        await renderer.render.remote(job)

    await render(-1)  # loads the style on the replica
    calls = [partial(render, i) for i in range(n)]
    return summarize(f"{concurrency} concurrent", *await timed_concurrently(calls, concurrency))


def side(max_batch_size: int, n: int) -> list[dict[str, Any]]:
    """One graph with a Renderer batching up to ``max_batch_size``: a row per concurrency.

    In a process of its own: a handle's background calls outlive ``serve.shutdown`` in the
    process that used it, and would start a Ray of their own under the next side's."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_run_side, max_batch_size, n).result()


def _run_side(max_batch_size: int, n: int) -> list[dict[str, Any]]:
    return asyncio.run(_side(max_batch_size, n))


async def _side(max_batch_size: int, n: int) -> list[dict[str, Any]]:
    # The graph starts and stops inside the loop its handle runs on (Serve may run a handle's
    # router on the caller's loop, and stops it at shutdown).
    from ray import serve

    from serve_app.local import local_graph

    args = {**BENCH_ARGS, "renderer": {**BENCH_ARGS["renderer"], "max_batch_size": max_batch_size}}
    with (
        tempfile.TemporaryDirectory(prefix="soul-bench-") as tmp,
        local_graph(Path(tmp), port=free_port(), args=args, quiet=True),
    ):
        renderer = serve.get_deployment_handle("Renderer", "soul").options(
            multiplexed_model_id=STYLE
        )
        rows = [await renders_at(renderer, c, max(n, 2 * c)) for c in CONCURRENCY]
    label = "batched" if max_batch_size > 1 else "unbatched"
    return [{**row, "side": f"{label}, {row['side']}"} for row in rows]


def batch_main(ns: argparse.Namespace) -> int:
    n = ns.requests or 16
    unbatched, batched = side(1, n), side(BATCHED, n)
    ratio = {
        f"renders/s batched/unbatched at {c}": b["rps"] / u["rps"]
        for c, u, b in zip(CONCURRENCY, unbatched, batched, strict=True)
    }
    rows = unbatched + batched
    print_table(f"soul bench batch (max_batch_size {BATCHED} vs 1)", rows, ratio)
    report = {"scenario": "batch", "rows": rows, "ratios": ratio, "max_batch_size": BATCHED}
    write_report(ns, report)
    return 0
