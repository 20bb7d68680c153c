"""Inference in overlapping tiles, so that memory is bounded by the tile and not the image.

cut:    the image is cut into ``tile``-px squares; each is read with ``overlap`` px of its
        neighbours around it (less at the image's edges)
run:    tiles of one shape go through the network together, ``batch`` at a time, whatever
        image they come from (the requests a replica batched)
paste:  only each tile's own square of the output is kept: the margin, where the network saw
        less context, is thrown away, so no seam shows where an overlap covers the
        network's receptive field
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Tile:
    """One tile of image ``image``: its square ``y0:y1, x0:x1`` read with a margin
    (``top, left`` px of it before the square)."""

    image: int
    y0: int
    y1: int
    x0: int
    x1: int
    top: int
    left: int


def tiles(index: int, height: int, width: int, tile: int, overlap: int) -> Iterator[Tile]:
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            top, left = min(overlap, y0), min(overlap, x0)
            yield Tile(index, y0, min(y0 + tile, height), x0, min(x0 + tile, width), top, left)


def _padded(tile: Tile, height: int, width: int, overlap: int) -> tuple[slice, slice]:
    rows = slice(tile.y0 - tile.top, min(tile.y1 + overlap, height))
    cols = slice(tile.x0 - tile.left, min(tile.x1 + overlap, width))
    return rows, cols


@torch.inference_mode()
def upscale_tiled(
    network: nn.Module,
    scale: int,
    images: list[np.ndarray],
    *,
    tile: int,
    overlap: int,
    batch: int,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[np.ndarray]:
    """Each ``(H, W, 3)`` uint8 image, ``scale`` times larger."""
    outputs = [np.empty((im.shape[0] * scale, im.shape[1] * scale, 3), np.uint8) for im in images]
    groups: dict[tuple[int, int], list[Tile]] = defaultdict(list)
    for index, image in enumerate(images):
        height, width = image.shape[:2]
        for t in tiles(index, height, width, tile, overlap):
            rows, cols = _padded(t, height, width, overlap)
            groups[(rows.stop - rows.start, cols.stop - cols.start)].append(t)
    for group in groups.values():
        for start in range(0, len(group), batch):
            chunk = group[start : start + batch]
            inputs = []
            for t in chunk:
                height, width = images[t.image].shape[:2]
                rows, cols = _padded(t, height, width, overlap)
                inputs.append(images[t.image][rows, cols])
            stacked = torch.from_numpy(np.stack(inputs)).to(device).permute(0, 3, 1, 2)
            result = network(stacked.to(dtype) / 255.0).float().clamp_(0, 1).mul_(255).round_()
            pixels = result.byte().permute(0, 2, 3, 1).cpu().numpy()
            for t, out in zip(chunk, pixels, strict=True):
                y, x = t.top * scale, t.left * scale
                h, w = (t.y1 - t.y0) * scale, (t.x1 - t.x0) * scale
                outputs[t.image][t.y0 * scale :, t.x0 * scale :][:h, :w] = out[y : y + h, x : x + w]
    return outputs
