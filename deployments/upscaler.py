"""Upscaler: Real-ESRGAN networks (``serve_app/upscale``) over overlapping tiles, for print
versions. A request asks for at least a factor; the smallest loaded model factor that reaches it
answers (the largest, if none does: the caller resizes the rest of the way)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from serve_app.diffusion.pipelines import configure_torch
from serve_app.diffusion.sources import ModelManager, model_manager
from serve_app.settings import Settings
from serve_app.upscale.tiling import upscale_tiled
from serve_app.upscale.weights import load_network


class UpscalerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(
        default=["tiny-rrdb-x2", "tiny-compact-x4"],
        min_length=1,
        max_length=8,
        description="Real-ESRGAN weights (RRDBNet or SRVGGNetCompact safetensors: a tag, an "
        "absolute path or civitai:<id>); each one's factor is read from its weights, and a "
        "request gets the smallest factor that reaches its size.",
    )
    tile: int = Field(
        default=256, ge=32, le=2048, description="Tile side in input pixels: bounds the memory."
    )
    overlap: int = Field(
        default=16,
        ge=0,
        le=256,
        description="Input pixels of context read around each tile and thrown away after: "
        "no seams once it covers the network's receptive field.",
    )
    tile_batch: int = Field(
        default=4, ge=1, le=64, description="Tiles of one shape run through the network at once."
    )
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="Where the networks run.")
    dtype: Literal["auto", "float32", "float16"] = Field(
        default="auto", description="auto: float16 on cuda, float32 on cpu."
    )


@dataclass(frozen=True)
class Upscaled:
    pixels: np.ndarray
    factor: int
    model: str


class UpscalerEngine:
    def __init__(self, manager: ModelManager, config: UpscalerConfig | None = None) -> None:
        self.manager = manager
        self.networks: dict[str, Any] = {}
        self._loading = threading.Lock()
        self.configure(config or UpscalerConfig())

    def configure(self, config: UpscalerConfig) -> None:
        """Load every model the config names (each once), so that their factors are known."""
        import torch

        on_gpu = "float16" if config.device == "cuda" else "float32"
        self.dtype = getattr(torch, on_gpu if config.dtype == "auto" else config.dtype)
        with self._loading:
            for ref in config.models:
                if ref not in self.networks:
                    network = load_network(self.manager.ensure(ref))
                    self.networks[ref] = network.to(config.device, self.dtype)
            self.config = config

    def factors(self) -> dict[str, int]:
        return {ref: self.networks[ref].scale for ref in self.config.models}

    def choose(self, at_least: float) -> str:
        """The model of the smallest factor ≥ ``at_least`` (else of the largest factor)."""
        by_factor = sorted(self.factors().items(), key=lambda item: item[1])
        return next((ref for ref, f in by_factor if f >= at_least), by_factor[-1][0])

    def upscale(self, requests: list[tuple[np.ndarray, float]]) -> list[Upscaled]:
        """Each ``(pixels, at_least)``: the image upscaled by its chosen model (tiles of the
        images that share a model run together)."""
        chosen = [self.choose(at_least) for _, at_least in requests]
        results: dict[int, Upscaled] = {}
        for ref in dict.fromkeys(chosen):
            indexes = [i for i, r in enumerate(chosen) if r == ref]
            outputs = self.run(ref, [requests[i][0] for i in indexes])
            results |= dict(zip(indexes, outputs, strict=True))
        return [results[i] for i in range(len(requests))]

    def run(self, ref: str, images: list[np.ndarray]) -> list[Upscaled]:
        """``images`` upscaled by the model ``ref``."""
        network, cfg = self.networks[ref], self.config
        fold = 4 // network.scale if hasattr(network, "conv_first") else 1  # RRDBNet x2, x1
        tile, overlap = cfg.tile - cfg.tile % fold, cfg.overlap - cfg.overlap % fold
        outputs = upscale_tiled(
            network,
            network.scale,
            [_padded_to(image, fold) for image in images],
            tile=tile,
            overlap=overlap,
            batch=cfg.tile_batch,
            device=cfg.device,
            dtype=self.dtype,
        )
        return [
            Upscaled(
                out[: image.shape[0] * network.scale, : image.shape[1] * network.scale],
                network.scale,
                ref,
            )
            for image, out in zip(images, outputs, strict=True)
        ]


def _padded_to(pixels: np.ndarray, multiple: int) -> np.ndarray:
    """``pixels`` with edge rows/columns repeated up to a multiple of ``multiple`` (RRDBNet x2
    folds 2x2 pixels into channels)."""
    height, width = pixels.shape[:2]
    pad = ((0, -height % multiple), (0, -width % multiple), (0, 0))
    return np.pad(pixels, pad, mode="edge") if any(p[1] for p in pad) else pixels


@serve.deployment(name="Upscaler", ray_actor_options={"num_cpus": 1}, max_ongoing_requests=4)
class Upscaler:
    def __init__(self) -> None:
        settings = Settings()
        configure_torch(settings.models)
        self.engine: UpscalerEngine | None = None
        self.manager = model_manager(settings)

    def reconfigure(self, config: dict) -> None:
        cfg = UpscalerConfig.model_validate(config)
        if self.engine is None:
            self.engine = UpscalerEngine(self.manager, cfg)
        else:
            self.engine.configure(cfg)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def upscale(self, requests: list[tuple[np.ndarray, float]]) -> list[Upscaled]:
        assert self.engine is not None
        return await asyncio.to_thread(self.engine.upscale, requests)
