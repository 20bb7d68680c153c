"""`soul bench storyboard`: what a storyboard's exports cost: the PDF sheet (1, 2 and 4 frames a
page) and the image-sequence zip over ``--requests`` frames (default 100) at 16:9's SDXL size,
in-process. The frames are PNGs of a gradient with mild noise (they compress about as a render
does); their scenes come from a small structured story compiled against its own assets.
"""

from __future__ import annotations

import argparse
import io
import time
from typing import Any

from serve_app.bench.common import write_report

FRAMES = 100
STORY = """
title: Bench
scenes:
  - heading: EXT. HARBOR - MORNING
    characters: [Nova, Marco]
    mood: hopeful
    lighting: soft morning haze
    camera: wide shot, low angle
    action: Nova and Marco carry the lantern down to the boats.
    dialogue: [{character: Marco, parenthetical: laughing, text: "Mind the ropes!"}]
  - environment: Harbor
    characters: [Nova]
    camera: close-up
    action: Nova looks back at the lighthouse.
"""


def frame_images(count: int, size: tuple[int, int]) -> list[bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    out = []
    for n in range(count):
        base = np.stack([x * 255 // size[0], y * 255 // size[1], np.full_like(x, n * 37 % 256)], -1)
        pixels = (base + rng.integers(0, 24, base.shape)).clip(0, 255).astype("uint8")
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def storyboard_main(ns: argparse.Namespace) -> int:
    from serve_app.stories.assets import AssetTable, DirectoryEntry
    from serve_app.stories.compiler import compile_script
    from serve_app.stories.composition import frame_seed
    from serve_app.stories.exports import CastEntry, Cover, ExportFrame, image_sequence
    from serve_app.stories.sheet import storyboard_pdf

    count = ns.requests or FRAMES
    assets = AssetTable(
        [
            DirectoryEntry("CHAR_NOVA", "character", "Nova", locked_version=1),
            DirectoryEntry("CHAR_MARCO", "character", "Marco", locked_version=1),
            DirectoryEntry("ENV_HARBOR", "environment", "Harbor", locked_version=1),
        ]
    )
    scenes = compile_script("BENCH", STORY, assets).scenes
    images = frame_images(count, scenes[0].size)
    frames = [
        ExportFrame(
            frame_id=f"FR{n:04d}",
            scene=(scene := scenes[n % len(scenes)]),
            frame_index=n // len(scenes),
            render_version=1,
            image=image,
            seed=frame_seed("BENCH", scene.scene_id, n // len(scenes)).seed,
            pipeline_version="bench",
            pipeline_hash="sha256:bench",
        )
        for n, image in enumerate(images)
    ]
    cover = Cover(project_id="BENCH", project_name="Bench", cast=[CastEntry(name="Nova")])
    rows: list[dict[str, Any]] = []
    for per_page in (1, 2, 4):
        start = time.perf_counter()
        pdf = storyboard_pdf(cover, frames, per_page=per_page)
        rows.append(row(f"pdf, {per_page} a page", time.perf_counter() - start, len(pdf), count))
    start = time.perf_counter()
    archive = image_sequence(frames, "BENCH", "bench")
    rows.append(row("image-sequence zip", time.perf_counter() - start, len(archive), count))
    frames_mb = sum(len(image) for image in images) / 1e6
    print(f"\n{count} frames, {scenes[0].size[0]}x{scenes[0].size[1]} PNG, {frames_mb:.1f} MB")
    print(f"{'export':<24}{'s':>8}{'ms/frame':>10}{'MB':>8}")
    for r in rows:
        print(f"{r['export']:<24}{r['s']:>8.2f}{r['ms_per_frame']:>10.1f}{r['mb']:>8.1f}")
    write_report(ns, {"frames": count, "frames_mb": round(frames_mb, 1), "exports": rows})
    return 0


def row(export: str, seconds: float, size: int, count: int) -> dict[str, Any]:
    return {
        "export": export,
        "s": round(seconds, 3),
        "ms_per_frame": round(seconds * 1000 / count, 2),
        "mb": round(size / 1e6, 2),
    }
