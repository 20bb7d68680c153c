"""`soul bench upscale`: the Upscaler's engine in-process on the tiny Real-ESRGAN networks (their
architecture at test width: random weights cost what trained ones do at the same size).

    speed     megapixels of output a second, x2 and x4, at 512→1024 and 1024→2048 sources,
              beside PIL's Lanczos resize to the same size (the ratio: what the network costs)
    memory    peak resident memory of one 1024→2048 upscale, tiled vs untiled, each in a
              fresh process (the high-water mark grows only)
    print     a print job's stages in-process from a 1024² still: upscale, frame + chain,
              encode + validate, for the portrait PNG and the scene JPEG
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from serve_app.bench.common import write_report

CASES = (
    ("tiny-rrdb-x2", 512),
    ("tiny-rrdb-x2", 1024),
    ("tiny-compact-x4", 256),
    ("tiny-compact-x4", 512),
    ("tiny-rrdb-x4", 256),
)
TILE, OVERLAP = 256, 16


def _source(side: int) -> np.ndarray:
    """A smooth picture with edges (a still's kind of content), ``side`` px square."""
    y, x = np.mgrid[0:side, 0:side] / side
    rgb = np.stack([np.sin(9 * x) * 0.5 + 0.5, np.cos(7 * y) * 0.5 + 0.5, (x + y) / 2], axis=-1)
    rgb[(x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.08] *= 0.3
    return (rgb * 255).astype(np.uint8)


def _engine(models_dir: Path, tile: int) -> Any:
    from deployments.upscaler import UpscalerConfig, UpscalerEngine
    from serve_app.diffusion.sources import ModelManager

    refs = [ref for ref, _ in CASES]
    config = UpscalerConfig(models=list(dict.fromkeys(refs)), tile=tile, overlap=OVERLAP)
    return UpscalerEngine(ModelManager(models_dir), config)


def _speed(engine: Any) -> list[dict[str, Any]]:
    rows = []
    for ref, side in CASES:
        network = engine.networks[ref]
        source = _source(side)
        out_side = side * network.scale
        t0 = time.perf_counter()
        engine.run(ref, [source])
        model_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        Image.fromarray(source).resize((out_side, out_side), Image.Resampling.LANCZOS)
        lanczos_s = time.perf_counter() - t0
        rows.append(
            {
                "model": ref,
                "x": network.scale,
                "source": f"{side}²",
                "output": f"{out_side}²",
                "seconds": round(model_s, 3),
                "mpx_per_s": round(out_side**2 / 1e6 / model_s, 2),
                "lanczos_s": round(lanczos_s, 4),
                "vs_lanczos": round(model_s / lanczos_s, 1),
            }
        )
    return rows


def _peak_mb(models_dir: str, tile: int, queue: Any) -> None:
    engine = _engine(Path(models_dir), tile)
    source = _source(1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    engine.run("tiny-rrdb-x2", [source])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(round((after - before) / 1024, 1))


def _memory(models_dir: Path) -> dict[str, float]:
    spawn = multiprocessing.get_context("spawn")
    peaks = {}
    for name, tile in (("tiled 256", TILE), ("untiled", 2048)):  # 2048: the whole source
        queue = spawn.Queue()
        child = spawn.Process(target=_peak_mb, args=(str(models_dir), tile, queue))
        child.start()
        child.join()  # a float comes back: the queue never fills
        peaks[name] = queue.get(timeout=5)
    return peaks


def _print_job(engine: Any) -> list[dict[str, Any]]:
    from serve_app.prints.chain import run_chain
    from serve_app.prints.output import encode, frame
    from serve_app.prints.spec import PrintOptions, load_prints

    config = load_prints()
    rows = []
    for options in (PrintOptions(size="portrait"), PrintOptions(size="scene", format="jpeg")):
        still = _source(1024)
        width, height = options.pixels
        t0 = time.perf_counter()
        [upscaled] = engine.upscale([(still, max(width, height) / 1024)])
        t1 = time.perf_counter()
        framed = frame(Image.fromarray(upscaled.pixels), options.pixels, options.fit)
        picture = run_chain(framed, config.chain_of("nova", None), [])
        t2 = time.perf_counter()
        data = encode(picture, options, config)
        t3 = time.perf_counter()
        rows.append(
            {
                "print": f"{options.size} {options.format}",
                "model": upscaled.model,
                "upscale_s": round(t1 - t0, 2),
                "frame_chain_s": round(t2 - t1, 2),
                "encode_validate_s": round(t3 - t2, 2),
                "total_s": round(t3 - t0, 2),
                "mb": round(len(data) / 1e6, 2),
            }
        )
    return rows


def upscale_main(ns: argparse.Namespace) -> int:
    from serve_app.settings import Settings
    from serve_app.upscale.weights import build_tiny_upscalers

    models_dir = Settings().resolved_models_dir
    build_tiny_upscalers(models_dir)
    engine = _engine(models_dir, TILE)
    speed, memory, stages = _speed(engine), _memory(models_dir), _print_job(engine)
    print(f"\nupscale, CPU, tile {TILE} overlap {OVERLAP}")
    print(
        f"{'model':<18}{'x':>3}{'source':>8}{'output':>8}{'s':>8}{'MPx/s':>8}"
        f"{'lanczos s':>11}{'ratio':>8}"
    )
    for r in speed:
        print(
            f"{r['model']:<18}{r['x']:>3}{r['source']:>8}{r['output']:>8}{r['seconds']:>8.2f}"
            f"{r['mpx_per_s']:>8.2f}{r['lanczos_s']:>11.3f}{r['vs_lanczos']:>8.1f}"
        )
    print(
        "peak memory growth of one 1024→2048 x2 upscale (MB): "
        + ", ".join(f"{k} {v}" for k, v in memory.items())
    )
    print(
        f"\n{'print (from 1024²)':<22}{'model':<18}{'upscale s':>10}{'frame+chain s':>14}"
        f"{'encode s':>10}{'total s':>9}{'MB':>6}"
    )
    for r in stages:
        print(
            f"{r['print']:<22}{r['model']:<18}{r['upscale_s']:>10.2f}{r['frame_chain_s']:>14.2f}"
            f"{r['encode_validate_s']:>10.2f}{r['total_s']:>9.2f}{r['mb']:>6.2f}"
        )
    write_report(
        ns,
        {
            "tile": TILE,
            "overlap": OVERLAP,
            "speed": speed,
            "peak_memory_mb": memory,
            "print_stages": stages,
        },
    )
    return 0
