"""The print file: the upscaled still framed to the exact size, through its chain, cut out if
asked, written at the configured DPI with an sRGB profile, and checked before it is kept.

    frame     cover: scaled to fill the size and centre-cropped; contain: scaled to fit and
              centred on white (transparent when the background goes)
    chain     the steps on the RGB picture (``chain.run_chain``)
    cut out   the matte (ONNX or GrabCut) as the alpha channel: RGBA
    encode    PNG, or JPEG at ``jpeg_quality``; 300 DPI and sRGB by default
    validate  read back: exact size, RGB or RGBA (24 or 32 bits), the DPI, at most
              ``max_bytes``: an over-large JPEG is written again at lower qualities, a PNG at
              the strongest compression and then with 7 significant bits a channel, before
              the print fails (``PrintTooLarge``)
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageCms

from serve_app.errors import InvalidRequest
from serve_app.prints.chain import AnyStep, Rgb, run_chain
from serve_app.prints.matte import cut_out
from serve_app.prints.spec import PrintOptions, PrintsConfig

WHITE = (255, 255, 255, 255)
CLEAR = (0, 0, 0, 0)
LOWER_QUALITIES = (90, 85, 80, 75)
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
Matte = Callable[[Image.Image], Image.Image]


class PrintTooLarge(InvalidRequest):
    """The print does not fit the byte limit at any quality the service writes."""


class InvalidPrint(RuntimeError):
    """A written print that does not read back as asked: the service's fault."""


def frame(image: Image.Image, size: tuple[int, int], fit: str) -> Image.Image:
    """``image`` at exactly ``size``: cropped (cover) or padded on white (contain)."""
    width, height = size
    if fit == "cover":
        scale = max(width / image.width, height / image.height)
        scaled = image.resize(
            (max(width, round(image.width * scale)), max(height, round(image.height * scale))),
            Image.Resampling.LANCZOS,
        )
        left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    scale = min(width / image.width, height / image.height)
    inner = (min(width, round(image.width * scale)), min(height, round(image.height * scale)))
    canvas = Image.new("RGB", size, WHITE[:3])
    corner = ((width - inner[0]) // 2, (height - inner[1]) // 2)
    canvas.paste(image.resize(inner, Image.Resampling.LANCZOS), corner)
    return canvas


def finish(
    upscaled: Image.Image,
    options: PrintOptions,
    config: PrintsConfig,
    steps: list[AnyStep],
    palette: list[Rgb],
    matte: Matte | None,
) -> bytes:
    """The print's file, validated (``matte`` is used when the background goes)."""
    framed = frame(upscaled.convert("RGB"), options.pixels, options.fit)
    picture = run_chain(framed, steps, palette)
    if options.background == "remove":
        assert matte is not None
        picture = cut_out(picture, matte(picture))
    return encode(picture, options, config)


def encode(picture: Image.Image, options: PrintOptions, config: PrintsConfig) -> bytes:
    """``picture`` as its format, within ``max_bytes`` if any quality allows."""
    if options.format == "jpeg":
        qualities = (config.jpeg_quality, *LOWER_QUALITIES)
        attempts = [{"quality": q} for q in qualities if q <= config.jpeg_quality]
    else:
        attempts = [{"compress_level": 6}, {"compress_level": 9}, {"compress_level": 9, "bits": 7}]
    for attempt in attempts:
        data = _written(picture, options.format, config.dpi, attempt)
        if len(data) <= config.max_bytes:
            validate(data, options, config)
            return data
    raise PrintTooLarge(
        f"format: the {options.format} print is {len(data) / 1e6:.1f} MB, over the "
        f"{config.max_bytes / 1e6:.1f} MB limit at every quality tried; ask for jpeg or a "
        "smaller size"
    )


def _written(picture: Image.Image, fmt: str, dpi: int, attempt: dict[str, int]) -> bytes:
    """``picture`` saved as asked; ``bits``: its colour channels rounded to that many
    significant bits first (still 8 bits a channel in the file, but fewer distinct values
    compress better: 7 bits is below what a print shows)."""
    out = io.BytesIO()
    kind = "JPEG" if fmt == "jpeg" else "PNG"
    if (bits := attempt.pop("bits", 8)) < 8:
        pixels = np.array(picture)
        pixels[..., :3] &= 0xFF << (8 - bits) & 0xFF
        picture = Image.fromarray(pixels)
    picture.save(out, format=kind, dpi=(dpi, dpi), icc_profile=SRGB, **attempt)
    return out.getvalue()


def validate(data: bytes, options: PrintOptions, config: PrintsConfig) -> None:
    """Raise unless ``data`` reads back as the print asked for."""
    with Image.open(io.BytesIO(data)) as image:
        dpi = image.info.get("dpi", (0, 0))
        wanted_mode = "RGBA" if options.background == "remove" else "RGB"
        problems = [
            f"size {image.size} is not {options.pixels}" if image.size != options.pixels else "",
            f"mode {image.mode} is not {wanted_mode}" if image.mode != wanted_mode else "",
            f"dpi {dpi} is not {config.dpi}" if round(float(dpi[0])) != config.dpi else "",
            "no sRGB profile" if image.info.get("icc_profile") != SRGB else "",
            f"{len(data)} bytes > {config.max_bytes}" if len(data) > config.max_bytes else "",
        ]
    if any(problems):
        raise InvalidPrint("; ".join(p for p in problems if p))
