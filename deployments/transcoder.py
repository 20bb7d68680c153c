"""Transcoder: frames → looping animated GIF (+ cover PNG and JSON sidecar) in the object store.

Encoding runs entirely in memory through PyAV (FFmpeg's libavfilter + gif muxer); no temp
files and no ffmpeg subprocess. The filter graph is the PyAV equivalent of::

    ffmpeg -vf "scale=W:-2:flags=lanczos,split[a][b];[a]palettegen[p];[b][p]paletteuse" -loop 0

with two deliberate differences in the palettegen branch (see `_build_graph`).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from fractions import Fraction

import av
import av.error
import numpy as np
from av.filter import Graph
from av.video.format import VideoFormat
from av.video.frame import VideoFrame
from PIL import Image
from pydantic import BaseModel, Field
from ray import serve

from serve_app.objects import ObjectStore, open_object_store
from serve_app.schemas import EncodedAsset, EncodeJob, Frames
from serve_app.settings import Settings

GIF_TIME_BASE = Fraction(1, 100)  # GIF frame delays are stored in centiseconds.
MIN_FPS, MAX_FPS = 1, 60
MIN_WIDTH, MAX_WIDTH = 16, 2048
STATS_MAX_WIDTH = 256  # palettegen cost grows with the number of distinct colours it sees.
RGB24 = VideoFormat("rgb24")


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


def _build_graph(src_w: int, src_h: int, width: int, height: int) -> Graph:
    """Two buffer sources (index 0: palette stats, index 1: frames to quantise)::

        buffer0 -> scale (<= STATS_MAX_WIDTH) -> palettegen -----------> paletteuse.in1
        buffer1 -> scale=width:height:flags=lanczos -------------------> paletteuse.in0 -> sink

    Unlike `split`, separate sources let the stats branch (a) run at a reduced resolution,
    since upscaled frames only add interpolated colours that make palettegen much slower, and
    (b) receive the first frame again after the last: palettegen's stats_mode=diff only counts
    pixels of the *previous* frame that changed, so the last frame is otherwise never sampled.
    """
    stats_w = min(width, src_w, STATS_MAX_WIDTH)
    stats_h = _scaled_height(src_h, src_w, stats_w)
    graph = Graph()
    stats_src = graph.add_buffer(width=src_w, height=src_h, format=RGB24, time_base=GIF_TIME_BASE)
    main_src = graph.add_buffer(width=src_w, height=src_h, format=RGB24, time_base=GIF_TIME_BASE)
    stats_scale = graph.add("scale", f"{stats_w}:{stats_h}:flags=area")
    palettegen = graph.add("palettegen", "stats_mode=diff")
    main_scale = graph.add("scale", f"{width}:{height}:flags=lanczos")
    paletteuse = graph.add("paletteuse", "dither=sierra2_4a")
    sink = graph.add("buffersink")
    graph.link_nodes(stats_src, stats_scale, palettegen)
    graph.link_nodes(main_src, main_scale, paletteuse, sink)
    palettegen.link_to(paletteuse, 0, 1)
    graph.configure()
    return graph


def _rgb_frame(rgb: np.ndarray, pts: int) -> VideoFrame:
    frame = VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame.pts, frame.time_base = pts, GIF_TIME_BASE
    return frame


def _filter_frames(graph: Graph, frames: np.ndarray, delay: int) -> list[VideoFrame]:
    """Push every frame, then EOF, then drain: palettegen only emits its palette at EOF, and
    paletteuse holds back every frame until it has the palette."""
    for i, rgb in enumerate(frames):
        graph.vpush(_rgb_frame(rgb, i * delay))  # at=-1: into both sources
    graph.vpush(_rgb_frame(frames[0], len(frames) * delay), at=0)  # loop wrap, stats only
    graph.vpush(None)  # EOF into both sources
    out: list[VideoFrame] = []
    while True:
        try:
            out.append(graph.vpull())
        except av.error.EOFError:  # the sink is drained and at EOF
            return out
        except BlockingIOError as exc:  # EAGAIN after EOF: the graph would lose frames
            raise RuntimeError("GIF filter graph stalled before end of stream") from exc


def encode_gif(frames: np.ndarray, fps: int, width: int) -> bytes:
    """frames: uint8 array (N, H, W, 3) RGB. Returns the bytes of a looping (loop=0, infinite)
    animated GIF at `fps`, scaled to `width` px wide (height keeps aspect ratio, even number).

    Uses FFmpeg's filter graph through PyAV: scale (lanczos), palettegen (stats_mode=diff)
    and paletteuse (sierra2_4a dithering). Every frame is shown for round(100/fps)
    centiseconds, as GIF delays only have 10 ms resolution. Raises ValueError on bad input.
    """
    _validate(frames, fps, width)
    _, src_h, src_w, _ = frames.shape
    height = _scaled_height(src_h, src_w, width)
    delay = round(100 / fps)
    paletted = _filter_frames(_build_graph(src_w, src_h, width, height), frames, delay)

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="gif", options={"loop": "0"}) as container:
        stream = container.add_stream("gif", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "pal8"
        stream.time_base = stream.codec_context.time_base = GIF_TIME_BASE
        for frame in paletted:
            frame.duration = delay  # explicit, so the last frame's delay is not left to defaults
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buf.getvalue()


class TranscoderConfig(BaseModel):
    fps: int = Field(default=12, ge=MIN_FPS, le=MAX_FPS, description="GIF frame rate.")
    width: int = Field(default=512, ge=MIN_WIDTH, le=MAX_WIDTH, description="GIF width (px).")


def encode_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


class TranscoderEngine:
    def __init__(self, objects: ObjectStore, config: TranscoderConfig | None = None) -> None:
        self.objects = objects
        self.config = config or TranscoderConfig()

    def encode(self, frames: Frames, job: EncodeJob) -> EncodedAsset:
        """Write cover and sidecar first and the GIF last: the GIF's presence means complete."""
        cfg = self.config
        t0 = time.perf_counter()
        gif = encode_gif(frames.pixels, cfg.fps, cfg.width)
        encode_ms = round((time.perf_counter() - t0) * 1000, 1)
        _, src_h, src_w, _ = frames.pixels.shape
        meta = {
            **frames.meta,
            "fps": cfg.fps,
            "gif_width": cfg.width,
            "gif_height": _scaled_height(src_h, src_w, cfg.width),
            "gif_bytes": len(gif),
            "frame_count": int(frames.pixels.shape[0]),
            "encode_ms": encode_ms,
        }
        keys = {ext: f"{job.storage_stem}.{ext}" for ext in ("gif", "png", "json")}
        self.objects.put(keys["png"], encode_png(frames.pixels[0]))
        self.objects.put(keys["json"], json.dumps({**job.sidecar, **meta}, indent=2).encode())
        asset_url = self.objects.put(keys["gif"], gif)
        return EncodedAsset(
            gif_key=keys["gif"],
            cover_key=keys["png"],
            sidecar_key=keys["json"],
            asset_url=asset_url,
            meta=meta,
        )


@serve.deployment(name="Transcoder", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=4)
class Transcoder:
    def __init__(self) -> None:
        self.engine = TranscoderEngine(open_object_store(Settings()))

    def reconfigure(self, config: dict) -> None:
        self.engine.config = TranscoderConfig.model_validate(config)

    async def encode(self, frames: Frames, job: EncodeJob) -> EncodedAsset:
        return await asyncio.to_thread(self.engine.encode, frames, job)
