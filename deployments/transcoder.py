"""Transcoder: frames → looping animated GIF (+ optional animated WebP and MP4, cover PNG, still
WebP thumbnail and JSON sidecar) in the object store.

Encoding runs entirely in memory through PyAV (FFmpeg's libavfilter + muxers); no temp files and
no ffmpeg subprocess. Every format is scaled by the same filter graph; for the GIF it is the PyAV
equivalent of::

    ffmpeg -vf "scale=W:-2:flags=lanczos,split[a][b];[a]palettegen[p];[b][p]paletteuse" -loop 0

with two deliberate differences in the palettegen branch (see `_build_graph`).
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

import av
import av.error
import numpy as np
from av.codec.codec import UnknownCodecError
from av.filter import Graph
from av.filter.context import FilterContext
from av.video.format import VideoFormat
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve

from serve_app.metrics import observe, timed
from serve_app.schemas import EncodedAsset, EncodeJob, Frames, MediaFormat, Variant
from serve_app.settings import Settings
from serve_app.storage import open_object_store
from serve_app.storage.objects import ObjectStore

GIF_TIME_BASE = Fraction(1, 100)  # GIF frame delays are stored in centiseconds.
MIN_FPS, MAX_FPS = 1, 60
MIN_WIDTH, MAX_WIDTH = 16, 2048
STATS_MAX_WIDTH = 256  # palettegen cost grows with the number of distinct colours it sees.
RGB24 = VideoFormat("rgb24")
PALETTE = "pal8"  # the GIF's own palette, made by palettegen


@functools.cache
def _first_encoder(muxer: str, codecs: tuple[str, ...]) -> str:
    for name in codecs:
        try:
            av.Codec(name, "w")
        except UnknownCodecError:
            continue
        return name
    raise ValueError(
        f"{muxer}: this PyAV build (FFmpeg in av {av.__version__}) has none of the encoders "
        f"{', '.join(codecs)}"
    )


@dataclass(frozen=True)
class Encoding:
    """How one format is written: a muxer and its options, the first encoder of `codecs` that
    this FFmpeg build has, and the pixel format the filter graph hands to it."""

    muxer: str
    codecs: tuple[str, ...]
    pix_fmt: str
    options: dict[str, str]

    @property
    def codec(self) -> str:
        """The encoder used; ValueError when the build has none of `codecs`."""
        return _first_encoder(self.muxer, self.codecs)

    def timing(self, fps: int) -> tuple[Fraction, int]:
        """Time base and frame duration in it: GIF delays are whole centiseconds."""
        if self.muxer == "gif":
            return GIF_TIME_BASE, round(100 / fps)
        return Fraction(1, fps), 1


ENCODINGS: dict[MediaFormat, Encoding] = {
    "gif": Encoding("gif", ("gif",), PALETTE, {"loop": "0"}),
    # libwebp_anim (WebPAnimEncoder) stores only what changed between frames; plain libwebp
    # makes every frame a full image.
    "webp": Encoding("webp", ("libwebp_anim", "libwebp"), "yuv420p", {"loop": "0"}),
    # H.264 only: browsers do not play MPEG-4 Part 2, and hardware encoders need a GPU.
    "mp4": Encoding("mp4", ("libx264", "libopenh264"), "yuv420p", {"movflags": "+faststart"}),
}


def _validate(frames: np.ndarray, fps: int, width: int) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        got = frames.dtype if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"frames must be a uint8 numpy array, got {got}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (N, H, W, 3) RGB, got {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError("frames must contain at least one frame")
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"frames must have non-zero height and width, got {frames.shape}")
    if isinstance(fps, bool) or not isinstance(fps, int) or not MIN_FPS <= fps <= MAX_FPS:
        raise ValueError(f"fps must be an int in {MIN_FPS}..{MAX_FPS}, got {fps!r}")
    if isinstance(width, bool) or not isinstance(width, int) or not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValueError(f"width must be an int in {MIN_WIDTH}..{MAX_WIDTH}, got {width!r}")


def _scaled_height(src_h: int, src_w: int, width: int) -> int:
    """Aspect-preserving even height, like FFmpeg's `scale=width:-2` but never below 2."""
    return max(2, round(src_h * width / (src_w * 2)) * 2)


def _scaled_source(
    graph: Graph, src_w: int, src_h: int, width: int, flags: str, time_base: Fraction
) -> FilterContext:
    """A buffer source of RGB frames, scaled to `width` (and its even, aspect-kept height)."""
    source = graph.add_buffer(width=src_w, height=src_h, format=RGB24, time_base=time_base)
    scale = graph.add("scale", f"{width}:{_scaled_height(src_h, src_w, width)}:flags={flags}")
    source.link_to(scale)
    return scale


def _build_graph(src_w: int, src_h: int, width: int, pix_fmt: str, time_base: Fraction) -> Graph:
    """Frames scaled to `width` with lanczos, then converted to `pix_fmt`::

        buffer -> scale=width:height:flags=lanczos -> format=pix_fmt -> sink

    For PALETTE (the GIF), two buffer sources (index 0: palette stats, index 1: frames to
    quantise)::

        buffer0 -> scale (<= STATS_MAX_WIDTH) -> palettegen -----------> paletteuse.in1
        buffer1 -> scale=width:height:flags=lanczos -------------------> paletteuse.in0 -> sink

    Unlike `split`, separate sources let the stats branch (a) run at a reduced resolution,
    since upscaled frames only add interpolated colours that make palettegen much slower, and
    (b) receive the first frame again after the last: palettegen's stats_mode=diff only counts
    pixels of the *previous* frame that changed, so the last frame is otherwise never sampled.
    """
    graph = Graph()
    if pix_fmt == PALETTE:
        stats_w = min(width, src_w, STATS_MAX_WIDTH)
        palettegen = graph.add("palettegen", "stats_mode=diff")
        _scaled_source(graph, src_w, src_h, stats_w, "area", time_base).link_to(palettegen)
        last = graph.add("paletteuse", "dither=sierra2_4a")
        palettegen.link_to(last, 0, 1)
    else:
        last = graph.add("format", pix_fmt)
    _scaled_source(graph, src_w, src_h, width, "lanczos", time_base).link_to(last)
    last.link_to(graph.add("buffersink"))
    graph.configure()
    return graph


def _rgb_frame(rgb: np.ndarray, pts: int, time_base: Fraction) -> VideoFrame:
    frame = VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame.pts, frame.time_base = pts, time_base
    return frame


def _filter_frames(
    graph: Graph, frames: np.ndarray, step: int, time_base: Fraction, palette: bool
) -> list[VideoFrame]:
    """Push every frame, then EOF, then drain: palettegen only emits its palette at EOF, and
    paletteuse holds back every frame until it has the palette."""
    for i, rgb in enumerate(frames):
        graph.vpush(_rgb_frame(rgb, i * step, time_base))  # at=-1: into every source
    if palette:  # loop wrap, stats only
        graph.vpush(_rgb_frame(frames[0], len(frames) * step, time_base), at=0)
    graph.vpush(None)  # EOF into every source
    out: list[VideoFrame] = []
    while True:
        try:
            out.append(graph.vpull())
        except av.error.EOFError:  # the sink is drained and at EOF
            return out
        except BlockingIOError as exc:  # EAGAIN after EOF: the graph would lose frames
            raise RuntimeError("filter graph stalled before end of stream") from exc


def encode_frames(frames: np.ndarray, fps: int, width: int, encoding: Encoding) -> bytes:
    """frames: uint8 array (N, H, W, 3) RGB. Returns the bytes of a looping animation written
    as `encoding` says, at `fps`, scaled (lanczos) to `width` px wide (height keeps aspect
    ratio, even number). Raises ValueError on bad input or a missing encoder.
    """
    _validate(frames, fps, width)
    _, src_h, src_w, _ = frames.shape
    time_base, step = encoding.timing(fps)
    graph = _build_graph(src_w, src_h, width, encoding.pix_fmt, time_base)
    filtered = _filter_frames(graph, frames, step, time_base, encoding.pix_fmt == PALETTE)

    buf = io.BytesIO()
    # faststart (mp4) reopens the finished output to move its index to the front; in memory,
    # it reads a copy while it rewrites `buf`.
    with av.open(
        buf,
        mode="w",
        format=encoding.muxer,
        options=encoding.options,
        io_open=lambda *_: io.BytesIO(buf.getvalue()),
    ) as container:
        stream = cast(VideoStream, container.add_stream(encoding.codec, rate=fps))
        stream.width, stream.height = width, _scaled_height(src_h, src_w, width)
        stream.pix_fmt = encoding.pix_fmt
        stream.time_base = stream.codec_context.time_base = time_base
        for frame in filtered:
            frame.duration = step  # explicit, so the last frame's duration is not left to defaults
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buf.getvalue()


def encode_gif(frames: np.ndarray, fps: int, width: int) -> bytes:
    """frames: uint8 array (N, H, W, 3) RGB. Returns the bytes of a looping (loop=0, infinite)
    animated GIF at `fps`, scaled to `width` px wide (height keeps aspect ratio, even number).

    Uses FFmpeg's filter graph through PyAV: scale (lanczos), palettegen (stats_mode=diff)
    and paletteuse (sierra2_4a dithering). Every frame is shown for round(100/fps)
    centiseconds, as GIF delays only have 10 ms resolution. Raises ValueError on bad input.
    """
    return encode_frames(frames, fps, width, ENCODINGS["gif"])


class TranscoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fps: int = Field(default=12, ge=MIN_FPS, le=MAX_FPS, description="Frame rate.")
    width: int = Field(default=512, ge=MIN_WIDTH, le=MAX_WIDTH, description="Width (px).")
    thumbnail_px: int = Field(
        default=256,
        ge=16,
        le=1024,
        description="Longest side of each variant's still WebP thumbnail (never larger than "
        "the render).",
    )
    formats: list[MediaFormat] = Field(
        default=["gif"],
        description="Formats written per variant, each as <stem>.<format>: gif (required; "
        "written last, it marks the variant complete), webp (animated WebP), mp4 (H.264).",
    )

    @model_validator(mode="after")
    def _check_formats(self) -> TranscoderConfig:
        if "gif" not in self.formats:
            raise ValueError("formats must include 'gif': its object marks a complete variant")
        if "mp4" in self.formats and self.width % 2:
            raise ValueError(f"mp4 (yuv420p) needs an even width, got {self.width}")
        for fmt in self.formats:
            _ = ENCODINGS[fmt].codec  # refuse a format this FFmpeg build cannot encode, now
        return self


def encode_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def encode_thumbnail(image: Image.Image, px: int) -> bytes:
    """A still WebP of ``image``, its longest side ``px`` (aspect kept, never enlarged)."""
    still = image.convert("RGB")
    still.thumbnail((px, px), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    still.save(buf, format="WEBP", quality=80)
    return buf.getvalue()


def thumbnail_key(stem: str) -> str:
    """Where a variant's thumbnail lives: beside its other objects, ``<stem>.thumb.webp``."""
    return f"{stem}.thumb.webp"


class TranscoderEngine:
    def __init__(self, objects: ObjectStore, config: TranscoderConfig | None = None) -> None:
        self.objects = objects
        self.config = config or TranscoderConfig()

    def encode(self, frames: Frames, job: EncodeJob) -> EncodedAsset:
        """Write cover, thumbnail, sidecar and the other formats first and the GIF last: the
        GIF's presence means the variant is complete."""
        cfg = self.config
        order: list[MediaFormat] = [fmt for fmt in cfg.formats if fmt != "gif"] + ["gif"]
        t0 = time.perf_counter()
        encoded = {
            fmt: encode_frames(frames.pixels, cfg.fps, cfg.width, ENCODINGS[fmt]) for fmt in order
        }
        encode_ms = round((time.perf_counter() - t0) * 1000, 1)
        cover = encode_png(frames.pixels[0])
        thumbnail = encode_thumbnail(Image.fromarray(frames.pixels[0]), cfg.thumbnail_px)
        encode_s = round(time.perf_counter() - t0, 4)  # every object's encoding: its cost
        observe("soul_transcode_ms", encode_ms)
        observe("soul_gif_bytes", len(encoded["gif"]))
        _, src_h, src_w, _ = frames.pixels.shape
        keys = {fmt: f"{job.storage_stem}.{fmt}" for fmt in encoded}
        meta = {
            **frames.meta,
            "fps": cfg.fps,
            "gif_width": cfg.width,
            "gif_height": _scaled_height(src_h, src_w, cfg.width),
            **{f"{fmt}_bytes": len(data) for fmt, data in encoded.items()},
            "formats": keys,
            "frame_count": int(frames.pixels.shape[0]),
            "encode_ms": encode_ms,
            "encode_s": encode_s,
        }
        cover_key, sidecar_key = f"{job.storage_stem}.png", f"{job.storage_stem}.json"
        with timed("soul_store_ms", backend=self.objects.backend):
            self.objects.put(cover_key, cover)
            self.objects.put(thumbnail_key(job.storage_stem), thumbnail)
            self.objects.put(sidecar_key, json.dumps({**job.sidecar, **meta}, indent=2).encode())
            for fmt, data in encoded.items():  # in `order`: the GIF last
                asset_url = self.objects.put(keys[fmt], data)
        return EncodedAsset(
            gif_key=keys["gif"],
            cover_key=cover_key,
            thumbnail_key=thumbnail_key(job.storage_stem),
            sidecar_key=sidecar_key,
            asset_url=asset_url,
            meta=meta,
        )

    def thumbnail(self, variant: Variant) -> str:
        """The thumbnail of a variant made before thumbnails: made from its cover (or its GIF's
        first frame) on first request, then found where it was written."""
        key = thumbnail_key(variant.stem)
        if not self.objects.exists(key):
            source = self.objects.get(variant.meta.get("cover_key", variant.storage_key))
            with Image.open(io.BytesIO(source)) as image:
                self.objects.put(key, encode_thumbnail(image, self.config.thumbnail_px))
        return key


@serve.deployment(name="Transcoder", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=4)
class Transcoder:
    def __init__(self) -> None:
        self.engine = TranscoderEngine(open_object_store(Settings()))

    def reconfigure(self, config: dict) -> None:
        self.engine.config = TranscoderConfig.model_validate(config)

    async def encode(self, frames: Frames, job: EncodeJob) -> EncodedAsset:
        return await asyncio.to_thread(self.engine.encode, frames, job)

    async def thumbnail(self, variant: Variant) -> str:
        return await asyncio.to_thread(self.engine.thumbnail, variant)

    def formats(self) -> list[str]:
        """What new variants are encoded in (the config can change live)."""
        return list(self.engine.config.formats)
