"""`soul bench dedupe`: how often each of Dedupe's filters fires on the tiny model, and what a
check costs.

Renders of one prompt with distinct seeds are what must never be rejected (every pair is
checked); re-encoded copies of them (JPEG at a quality, or the picture shifted a few pixels)
are what should be. Each filter is judged alone, with `config/serve.local.yaml`'s Dedupe
settings (its model and thresholds), in-process.
"""

from __future__ import annotations

import argparse
import io
import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import yaml

from serve_app.bench.common import BENCH_ARGS, write_report

RENDERS = 16
LOCAL_CONFIG = "config/serve.local.yaml"  # Dedupe as `make serve` runs it


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    """The picture saved as a JPEG at ``quality`` and decoded again."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB"))


COPIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg q50": lambda p: jpeg(p, 50),
    "jpeg q30": lambda p: jpeg(p, 30),
    "jpeg q10": lambda p: jpeg(p, 10),
    "shifted 2 px": lambda p: np.roll(p, 2, axis=1),
}


def dedupe_main(ns: argparse.Namespace) -> int:
    from deployments.dedupe import DedupeConfig, DedupeEngine
    from deployments.renderer import RendererConfig, RendererEngine
    from serve_app.diffusion.sources import ModelManager
    from serve_app.diffusion.tiny import TINY_MODEL, build_tiny_models
    from serve_app.schemas import Frames, RenderJob
    from serve_app.settings import Settings, config_file

    models_dir = Settings().resolved_models_dir
    build_tiny_models(models_dir)
    manager = ModelManager(models_dir)
    renderer = RendererEngine(manager, RendererConfig(**BENCH_ARGS["renderer"]))
    app = yaml.safe_load(config_file(LOCAL_CONFIG).read_text())["applications"][0]
    config = DedupeConfig.model_validate(app["args"]["dedupe"])
    engine = DedupeEngine(config, manager)
    count = ns.requests or RENDERS
    renders = [
        renderer.render(
            RenderJob(
                style_id="bench",
                base_model_ref=TINY_MODEL,
                prompt="penguin on a skateboard, anime, pastel",
                negative_prompt="blurry",
                seed=seed,
            )
        ).pixels[0]
        for seed in range(count)
    ]
    known = [engine.check(Frames(pixels=p[None]), []).fingerprint for p in renders]
    cases = {
        "distinct renders (must pass)": [
            (renders[j], known[i]) for i, j in itertools.combinations(range(count), 2)
        ],
        **{
            f"{name} copies (should be caught)": [
                (copy(p), known[i]) for i, p in enumerate(renders)
            ]
            for name, copy in COPIES.items()
        },
    }
    rows = []
    for case, pairs in cases.items():
        verdicts = [engine.check(Frames(pixels=p[None]), [sibling]) for p, sibling in pairs]
        by_hash = [
            v.min_distance is not None and v.min_distance < config.threshold for v in verdicts
        ]
        by_picture = [
            v.clip_distance is not None and v.clip_distance < config.clip_distance for v in verdicts
        ]
        rows.append(
            {
                "case": case,
                "n": len(verdicts),
                "phash_fires": _share(by_hash),
                "clip_fires": _share(by_picture),
                "clip_only": _share(
                    [c and not h for h, c in zip(by_hash, by_picture, strict=True)]
                ),
            }
        )
    costs = {
        "phash": _ms_per_check(DedupeEngine(manager=manager), renders, known),
        "phash + clip": _ms_per_check(engine, renders, known),
    }
    _print(rows, costs, config)
    report = {"thresholds": {"phash": config.threshold, "clip": config.clip_distance}}
    write_report(ns, {**report, "cases": rows, "ms_per_check": costs})
    return 0


def _share(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 3)


def _ms_per_check(engine: Any, renders: list[np.ndarray], known: list[Any]) -> float:
    """Median time of one render checked against all the others (the key's siblings)."""
    from serve_app.schemas import Frames

    engine.check(Frames(pixels=renders[0][None]), known)  # loads the model, if any
    times = []
    for pixels in renders:
        t0 = time.perf_counter()
        engine.check(Frames(pixels=pixels[None]), known)
        times.append(time.perf_counter() - t0)
    return round(sorted(times)[len(times) // 2] * 1000, 2)


def _print(rows: list[dict[str, Any]], costs: dict[str, float], config: Any) -> None:
    print(
        f"\nDedupe filters as {LOCAL_CONFIG} has them ({config.clip_model}; pHash < "
        f"{config.threshold} bits, CLIP < {config.clip_distance})"
    )
    print(f"{'case':<40}{'n':>6}{'pHash':>8}{'CLIP':>8}{'CLIP only':>11}")
    for r in rows:
        print(
            f"{r['case']:<40}{r['n']:>6}{r['phash_fires']:>8.3f}{r['clip_fires']:>8.3f}"
            f"{r['clip_only']:>11.3f}"
        )
    print("\nms per check (one render against its key's other renders)")
    for name, ms in costs.items():
        print(f"{name:<40}{ms:>8.2f}")
