"""Background removal: an alpha matte for a picture, from a U²-Net-family ONNX model when one is
staged (``matte_model``), else from OpenCV's GrabCut, which needs no weights.

    GrabCut   works on a copy at most ``GRABCUT_SIDE`` px long (its cost grows with the pixels);
              the frame's outer ``MARGIN`` is taken for background, the rest is modelled; the
              mask is scaled back up and its edge softened
    ONNX      the interface rembg's U²-Net models share: one input (1, 3, S, S) float, the
              picture scaled to SxS, divided by its maximum and normalized with ImageNet's mean
              and deviation; the first output's first channel is the matte, stretched to [0, 1]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

GRABCUT_SIDE = 512
MARGIN = 0.04
ITERATIONS = 4
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def grabcut_alpha(image: Image.Image) -> Image.Image:
    """An ``L`` matte of ``image`` (RGB): 255 on the subject, 0 on the background."""
    import cv2

    small = image.copy()
    small.thumbnail((GRABCUT_SIDE, GRABCUT_SIDE), Image.Resampling.LANCZOS)
    bgr = np.ascontiguousarray(np.asarray(small)[:, :, ::-1])
    height, width = bgr.shape[:2]
    dx, dy = max(1, round(width * MARGIN)), max(1, round(height * MARGIN))
    mask = np.zeros((height, width), np.uint8)
    models = (np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64))
    frame = (dx, dy, width - 2 * dx, height - 2 * dy)
    cv2.grabCut(bgr, mask, frame, *models, ITERATIONS, cv2.GC_INIT_WITH_RECT)
    subject = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8) * 255
    alpha = Image.fromarray(subject).resize(image.size, Image.Resampling.BILINEAR)
    return alpha.filter(ImageFilter.GaussianBlur(1))


class OnnxMatte:
    """A U²-Net-family model (u2net, u2netp, isnet, silueta ...) run by onnxruntime."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        self.session: Any = onnxruntime.InferenceSession(
            str(path), providers=["CPUExecutionProvider"]
        )
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.side = int(first.shape[-1]) if isinstance(first.shape[-1], int) else 320

    def alpha(self, image: Image.Image) -> Image.Image:
        scaled = np.asarray(image.resize((self.side, self.side), Image.Resampling.LANCZOS))
        pixels = scaled.astype(np.float32) / max(float(scaled.max()), 1.0)
        normalized = ((pixels - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
        matte = self.session.run(None, {self.input_name: normalized})[0][0, 0]
        low, high = float(matte.min()), float(matte.max())
        stretched = (matte - low) / max(high - low, 1e-6)
        alpha = Image.fromarray((stretched * 255).round().astype(np.uint8))
        return alpha.resize(image.size, Image.Resampling.BILINEAR)


def cut_out(image: Image.Image, alpha: Image.Image) -> Image.Image:
    """``image`` with ``alpha`` as its transparency (RGBA)."""
    cut = image.convert("RGBA")
    cut.putalpha(alpha)
    return cut
