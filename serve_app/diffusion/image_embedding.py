"""CLIP image embeddings of renders: what Dedupe's second filter compares.

Two renders that differ in pixels but show the same picture (one re-encoded, slightly shifted
or recoloured) can be far apart in pHash, whose 64 bits follow the signs of low-frequency
coefficients, and still close in a CLIP image embedding. Embeddings are kept unit length as
float16 bytes: 1.5 KiB a variant for ViT-L/14's 768 dimensions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from serve_app.diffusion.pipelines import LOADING
from serve_app.diffusion.sources import ModelNotFound


class ImageEncoder:
    """A transformers ``CLIPVisionModelWithProjection`` folder (config.json, safetensors weights
    and the ``CLIPImageProcessor``'s preprocessor_config.json), loaded once."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        if not (path / "preprocessor_config.json").is_file():
            raise ModelNotFound(
                f"image encoder {path.name!r} must be a transformers CLIP vision folder with its "
                "preprocessor_config.json"
            )
        with LOADING:
            model: Any = CLIPVisionModelWithProjection.from_pretrained(
                path, use_safetensors=True, local_files_only=True
            )
            self.model = model.to(device).eval()
            self.processor: Any = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
        self.device = device

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """The unit-length embedding of one (H, W, 3) uint8 picture."""
        import torch

        inputs = self.processor(images=[pixels], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            vector = self.model(**inputs).image_embeds[0].float().cpu().numpy()
        unit: np.ndarray = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return unit


def packed(embedding: np.ndarray) -> bytes:
    return embedding.astype(np.float16).tobytes()


def unpacked(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float16).astype(np.float32)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 - cosine of two unit vectors: 0 for the same direction, 2 for opposite ones."""
    return float(1.0 - np.dot(a, b))
