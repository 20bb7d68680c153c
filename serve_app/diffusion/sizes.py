"""A render's size from the aspect its job asks for.

A job asks for a shape, not pixels (``RenderJob.aspect``, ``"W:H"``): the Renderer keeps the
pixel **area** of its configured ``width x height`` and gives each side the aspect's share,
rounded to a multiple of 8 (SDXL's VAE scales by 8). A 1024² Renderer renders 16:9 at 1368x768
and 4:3 at 1184x888 (SDXL's own buckets, 1344x768 and 1152x896, are within 2%); the tiny 64²
test Renderer renders 16:9 at 88x48. No aspect: exactly the configured size. A side below
``MIN_SIDE`` or above the Renderer's ``max_side`` is refused (a 422 naming both).
"""

from __future__ import annotations

import math

from serve_app.errors import InvalidRequest

MIN_SIDE = 32  # 4 latent pixels
MAX_RATIO = 4.0  # the widest and tallest aspect a job may ask for (SDXL's buckets go to ~4:1)


def ratio(aspect: str) -> float:
    """``"W:H"`` as width / height."""
    width, height = (int(part) for part in aspect.split(":"))
    return width / height


def render_size(aspect: str | None, base: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Width and height for ``aspect`` at the pixel area of ``base`` (width, height)."""
    if aspect is None:
        return base
    area, r = base[0] * base[1], ratio(aspect)
    width = max(8, round(math.sqrt(area * r) / 8) * 8)
    height = max(8, round(math.sqrt(area / r) / 8) * 8)
    if not (min(width, height) >= MIN_SIDE and max(width, height) <= max_side):
        raise InvalidRequest(
            f"aspect {aspect!r} renders at {width}x{height} on this Renderer "
            f"({base[0]}x{base[1]}'s area); each side must be {MIN_SIDE} to {max_side} px "
            "(renderer.max_side)"
        )
    return width, height
