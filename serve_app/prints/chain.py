"""Post-processing as data: a chain is a named list of steps, each a row of ``STEPS`` with its
typed parameters; ``config/prints.yaml`` names the chains and which soul uses which.

Each step takes an RGB picture (and the soul's palette) and returns one of the same size:
    levels      each channel stretched between its ``clip`` percentiles (auto levels), and with
                ``balance`` its mean moved toward the grey of all three (auto colour)
    palette     the picture's mean colour moved ``strength`` of the way toward the palette's
    brightness, contrast, saturation   PIL's enhancers, 1.0 leaves the picture as it is
    sharpen     an unsharp mask
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Literal

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from pydantic import BaseModel, ConfigDict, Field

Rgb = tuple[int, int, int]


class Step(BaseModel, ABC):
    model_config = ConfigDict(extra="forbid")

    @abstractmethod
    def apply(self, image: Image.Image, palette: list[Rgb]) -> Image.Image:
        """The picture after this step."""


class Levels(Step):
    step: Literal["levels"] = "levels"
    clip: float = Field(default=0.005, ge=0, le=0.1, description="Share clipped at each end.")
    balance: bool = Field(default=True, description="Also move the channel means to grey.")

    def apply(self, image: Image.Image, palette: list[Rgb]) -> Image.Image:
        pixels = np.asarray(image, dtype=np.float32)
        low = np.quantile(pixels, self.clip, axis=(0, 1))
        high = np.quantile(pixels, 1 - self.clip, axis=(0, 1))
        stretched = (pixels - low) * (255.0 / np.maximum(high - low, 1.0))
        if self.balance:
            means = stretched.mean(axis=(0, 1))
            stretched *= means.mean() / np.maximum(means, 1.0)
        return Image.fromarray(stretched.clip(0, 255).round().astype(np.uint8))


class Palette(Step):
    step: Literal["palette"] = "palette"
    strength: float = Field(default=0.15, ge=0, le=1, description="0: no shift; 1: the whole way.")

    def apply(self, image: Image.Image, palette: list[Rgb]) -> Image.Image:
        if not palette:
            return image
        pixels = np.asarray(image, dtype=np.float32)
        shift = np.mean(palette, axis=0) - pixels.mean(axis=(0, 1))
        moved = pixels + self.strength * shift
        return Image.fromarray(moved.clip(0, 255).round().astype(np.uint8))


class Brightness(Step):
    step: Literal["brightness"] = "brightness"
    factor: float = Field(default=1.0, ge=0.5, le=1.5)

    def apply(self, image: Image.Image, palette: list[Rgb]) -> Image.Image:
        return ImageEnhance.Brightness(image).enhance(self.factor)


class Contrast(Step):
    step: Literal["contrast"] = "contrast"
    factor: float = Field(default=1.0, ge=0.5, le=1.5)

    def apply(self, image: Image.Image, palette: list[Rgb]) -> Image.Image:
        return ImageEnhance.Contrast(image).enhance(self.factor)


class Saturation(Step):
    step: Literal["saturation"] = "saturation"
    factor: float = Field(default=1.05, ge=0, le=2)

    def apply(self, image: Image.Image, palette: list[Rgb]) -> Image.Image:
        return ImageEnhance.Color(image).enhance(self.factor)


class Sharpen(Step):
    step: Literal["sharpen"] = "sharpen"
    radius: float = Field(default=2.0, gt=0, le=20, description="Blur radius in pixels.")
    percent: int = Field(default=60, ge=0, le=500, description="How much edges are raised.")
    threshold: int = Field(default=2, ge=0, le=255, description="Least difference sharpened.")

    def apply(self, image: Image.Image, palette: list[Rgb]) -> Image.Image:
        return image.filter(ImageFilter.UnsharpMask(self.radius, self.percent, self.threshold))


# The table of steps: a new step is one class above and one name here.
AnyStep = Annotated[
    Levels | Palette | Brightness | Contrast | Saturation | Sharpen, Field(discriminator="step")
]
ChainName = Annotated[str, Field(pattern=r"^[a-z0-9]{1,32}$")]


def hex_palette(palette: dict[str, object]) -> list[Rgb]:
    """A style palette's ``colors`` (``#rrggbb``) as RGB; others are ignored."""
    colors = palette.get("colors")
    found: list[Rgb] = []
    for color in colors if isinstance(colors, list) else []:
        text = str(color).removeprefix("#")
        if len(text) == 6 and all(c in "0123456789abcdefABCDEF" for c in text):
            found.append((int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)))
    return found


def run_chain(image: Image.Image, steps: list[AnyStep], palette: list[Rgb]) -> Image.Image:
    """``image`` (RGB) through each step in order."""
    for step in steps:
        image = step.apply(image, palette)
    return image
