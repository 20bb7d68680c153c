"""`soul bench hot|miss|catalog`: side-by-side measurements in one invocation.

hot and miss: the service over HTTP next to its in-process floor. catalog: the catalog on
PostgreSQL next to SQLite (in-process operations, then the whole graph over HTTP with 2 ingress
and 2 catalog replicas: hot-path requests/s and the renders that miss coalescing saves).
Both sides run on the same machine in the same run, so ratios are what to read; absolute times
on a shared 2-core box are noisy. Prints a table and writes JSON.
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
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

CUE = "penguin on a skateboard"
SOUL = "nova"
BENCH_ARGS: dict[str, Any] = {
    "renderer": {"steps": 8, "width": 128, "height": 128},
    "animator": {"frames": 8, "steps": 10, "strength": 0.3},
}
ENCODE_RUNS = 5  # encode_formats: runs per format, the median is reported


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "scenario",
        choices=["hot", "miss", "catalog", "render"],
        help="hot: cache hits; miss: new renders; catalog: PostgreSQL vs SQLite; "
        "render: LoRA hot-swap vs reload, style switches, encode formats",
    )
    p.add_argument("--requests", type=int, default=None, help="measured requests per side")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP clients (hot)")
    p.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="catalog: PostgreSQL server to use (a scratch database is created and dropped)",
    )
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


async def http_hot(
    base: str, n: int, concurrency: int, side: str = "http (ingress -> catalog)"
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def get(user: str, expect: str | None = "hit") -> None:
            r = await client.get("/image", params={"soul_id": SOUL, "cue": CUE, "user_id": user})
            r.raise_for_status()
            assert expect is None or r.json()["cache"] == expect, r.text

        run = time.time_ns()
        await get(f"warm-{run}-0", expect=None)  # the first run renders what later users receive
        for i in range(1, 20):
            await get(f"warm-{run}-{i}")
        calls = [partial(get, f"http-{run}-{i}") for i in range(n)]
        return summarize(side, *await timed_concurrently(calls, concurrency))


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
    from serve_app.model_manager import ModelManager
    from serve_app.models import TINY_LORAS, TINY_MODEL
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


async def catalog_ops(dsn: str, n: int) -> list[dict[str, Any]]:
    """Key resolution and claims on one backend, called in-process (one at a time)."""
    import numpy as np

    from deployments.catalog import CatalogEngine
    from deployments.store import open_store
    from serve_app.ids import new_ulid
    from serve_app.schemas import Variant
    from serve_app.souls import load_souls

    backend = dsn.split(":")[0]
    engine = CatalogEngine(open_store(dsn))
    await engine.start(load_souls("config/souls.yaml"))
    rng = np.random.default_rng(0)
    hot = await engine.lookup(SOUL, CUE)
    assert hot is not None
    key, _ = await engine.resolve_similar(SOUL, hot.key_norm, rng.standard_normal(384).tolist())
    for _ in range(8):
        vid = new_ulid()
        variant = Variant(
            variant_id=vid, pk_id=key.pk_id, soul_id=SOUL, asset_url="", storage_key=vid
        )
        await engine.put_variant(variant, [])

    async def exact() -> None:
        assert (await engine.lookup(SOUL, CUE)).key is not None  # type: ignore[union-attr]

    counter = iter(range(10**9))

    async def new_key() -> None:
        await engine.resolve_similar(
            SOUL, f"bench key {next(counter)}", rng.standard_normal(384).tolist()
        )

    async def claim() -> None:
        assert await engine.claim_unseen(key.pk_id, f"claimer-{next(counter)}") is not None

    async def hit() -> None:
        found = await engine.lookup(SOUL, CUE, f"hitter-{next(counter)}")
        assert found is not None and found.claimed is not None

    rows = []
    for name, op in [
        ("key resolution: exact", exact),
        ("key resolution: new key (faiss)", new_key),
        ("claim unseen (8 variants)", claim),
        ("hot lookup + claim", hit),
    ]:
        for _ in range(20):  # warm-up: connections, prepared statements
            await op()
        rows.append(summarize(f"{backend}: {name}", *await timed_concurrently([op] * n, 1)))
    await engine.close()
    return rows


async def coalescing(base: str, users: int, cues: int) -> dict[str, Any]:
    """Scenario (b) scaled up: ``users`` users ask each of ``cues`` brand-new cues at once."""
    run = time.time_ns()
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:

        async def get(cue: str, user: str) -> str:
            r = await client.get("/image", params={"soul_id": SOUL, "cue": cue, "user_id": user})
            r.raise_for_status()
            return str(r.json()["variant_id"])

        t0 = time.perf_counter()
        ids = await asyncio.gather(
            *(get(f"novel thing {c} {run}", f"u{u}") for c in range(cues) for u in range(users))
        )
        wall = time.perf_counter() - t0
    renders = len(set(ids))
    return {
        "requests": len(ids),
        "renders": renders,
        "renders_saved": len(ids) - renders,
        "wall_s": round(wall, 2),
    }


def catalog_main(ns: argparse.Namespace, n: int) -> dict[str, Any]:
    from deployments.store import scratch_database
    from serve_app.local import local_graph

    ops: dict[str, list[dict[str, Any]]] = {}
    graphs: dict[str, dict[str, Any]] = {}
    args = {**BENCH_ARGS, "replicas": {"Ingress": 2, "Catalog": 2}}
    with tempfile.TemporaryDirectory(prefix="soul-bench-") as tmp:
        with scratch_database(ns.postgres, "soul_bench") as pg_url:
            ops["postgresql"] = asyncio.run(catalog_ops(pg_url, n))
        ops["sqlite"] = asyncio.run(catalog_ops(f"sqlite:///{Path(tmp) / 'ops.db'}", n))
        with scratch_database(ns.postgres, "soul_bench") as pg_url:
            for name, env in [("postgresql", {"SOUL_DATABASE_URL": pg_url}), ("sqlite", {})]:
                data_dir = Path(tmp) / name
                with local_graph(
                    data_dir, port=free_port(), args=args, env=env, quiet=True
                ) as base:
                    hot = [
                        asyncio.run(http_hot(base, n, c, f"{name}: http hot, {c} clients"))
                        for c in (1, ns.concurrency, 4 * ns.concurrency)
                    ]
                    coalesced = asyncio.run(coalescing(base, 32, 4))
                    graphs[name] = {"hot": hot, "coalescing": coalesced}
    return {"ops": ops, "graphs": graphs}


def print_table(title: str, rows: list[dict[str, Any]], ratio: dict[str, float]) -> None:
    print(f"\n{title}")
    print(f"{'side':<46}{'n':>6}{'p50 ms':>11}{'p95 ms':>11}{'req/s':>9}")
    for r in rows:
        print(f"{r['side']:<46}{r['n']:>6}{r['p50_ms']:>11.2f}{r['p95_ms']:>11.2f}{r['rps']:>9.1f}")
    for name, value in ratio.items():
        print(f"{name}: {value:.2f}")


def style_switching(models_dir: Path, n: int) -> dict[str, Any]:
    """LoRA hot-swap vs full reload, and render latency with and without style switches, on one
    in-process renderer (what one multiplexed replica does), tiny model at the bench settings."""
    from deployments.renderer import RendererConfig, RendererEngine
    from serve_app.model_manager import ModelManager
    from serve_app.models import TINY_LORAS, TINY_MODEL, StylePipelines
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
    from serve_app.models import build_tiny_models

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
    out = Path(ns.out or "bench-render.json")
    report = {"scenario": "render", "style_switching": switching, "encode": encode}
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


def main(ns: argparse.Namespace) -> int:
    from serve_app.local import local_graph
    from serve_app.models import build_tiny_models

    n = ns.requests or (200 if ns.scenario in ("hot", "catalog") else 5)
    if ns.scenario == "catalog":
        return report_catalog(ns, catalog_main(ns, n))
    if ns.scenario == "render":
        return render_main(ns)
    with tempfile.TemporaryDirectory(prefix="soul-bench-") as tmp:
        data_dir = Path(tmp)
        if ns.scenario == "miss":  # the floor first, while no replica competes for the cores
            build_tiny_models(data_dir / "models")
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


def report_catalog(ns: argparse.Namespace, result: dict[str, Any]) -> int:
    ops, graphs = result["ops"], result["graphs"]
    ratio = side_ratios(ops["postgresql"], ops["sqlite"], "p50_ms", "p50 ratio postgresql/sqlite")
    op_rows = ops["postgresql"] + ops["sqlite"]
    print_table("soul bench catalog: in-process catalog operations", op_rows, ratio)
    rps = side_ratios(
        graphs["postgresql"]["hot"], graphs["sqlite"]["hot"], "rps", "req/s ratio postgresql/sqlite"
    )
    hot_rows = graphs["postgresql"]["hot"] + graphs["sqlite"]["hot"]
    print_table("soul bench catalog: hot path over HTTP, 2 ingress + 2 catalog", hot_rows, rps)
    print("\nmiss coalescing: 32 users x 4 brand-new cues at once")
    for name, g in graphs.items():
        c = g["coalescing"]
        print(
            f"{name:<12}{c['requests']:>5} requests {c['renders']:>4} renders "
            f"{c['renders_saved']:>4} saved  {c['wall_s']:>7.2f} s"
        )
    out = Path(ns.out or "bench-catalog.json")
    out.write_text(json.dumps({"scenario": "catalog", **result, **ratio, **rps}, indent=2))
    print(f"wrote {out}")
    return 0


def side_ratios(
    left: list[dict[str, Any]], right: list[dict[str, Any]], field: str, label: str
) -> dict[str, float]:
    """``left[i][field] / right[i][field]``, named after what row i measured."""
    return {
        f"{label}, {a['side'].split(': ', 1)[1]}": a[field] / b[field]
        for a, b in zip(left, right, strict=True)
    }
