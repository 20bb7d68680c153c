"""Unit tests for deployments.transcoder (no Ray): decode the output with Pillow and PyAV."""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image, ImageSequence
from pydantic import ValidationError

from deployments.transcoder import (
    ENCODINGS,
    TranscoderConfig,
    TranscoderEngine,
    encode_frames,
    encode_gif,
)
from serve_app.bench.render import encode_formats
from serve_app.schemas import EncodeJob, Frames, Variant
from serve_app.storage.local import LocalObjectStore, MediaSigner

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


def solid_frames(colours: list[tuple[int, int, int]], h: int = 60, w: int = 80) -> np.ndarray:
    return np.stack([np.full((h, w, 3), c, dtype=np.uint8) for c in colours])


def decode(data: bytes) -> tuple[Image.Image, list[Image.Image]]:
    image = Image.open(io.BytesIO(data))
    return image, [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]


def durations(data: bytes) -> list[int]:
    image = Image.open(io.BytesIO(data))
    return [frame.info["duration"] for frame in ImageSequence.Iterator(image)]


def mean_rgb(frame: Image.Image) -> np.ndarray:
    mean: np.ndarray = np.asarray(frame, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return mean


def assert_close_rgb(frame: Image.Image, expected: tuple[int, int, int], tol: float = 24) -> None:
    got = mean_rgb(frame)
    assert np.all(np.abs(got - np.array(expected)) <= tol), f"{got} != ~{expected}"


def test_header_frame_count_size_loop_and_colours() -> None:
    colours = [RED, GREEN, BLUE, YELLOW]
    data = encode_gif(solid_frames(colours), fps=12, width=160)

    assert data.startswith(b"GIF89a")
    image, frames = decode(data)
    assert image.format == "GIF"
    assert len(frames) == len(colours)
    assert image.size == (160, 120)
    assert image.info["loop"] == 0
    for frame, colour in zip(frames, colours, strict=True):
        assert_close_rgb(frame, colour)


def test_last_frame_colour_is_in_palette() -> None:
    # palettegen stats_mode=diff alone never samples the last frame's new colours.
    data = encode_gif(solid_frames([RED, GREEN, YELLOW]), fps=12, width=64)
    _, frames = decode(data)
    assert_close_rgb(frames[-1], YELLOW)


@pytest.mark.parametrize(
    ("fps", "allowed_ms"),
    [(1, {1000}), (10, {100}), (12, {80, 90}), (24, {40}), (30, {30}), (60, {20})],
)
def test_frame_duration_matches_fps(fps: int, allowed_ms: set[int]) -> None:
    data = encode_gif(solid_frames([RED, GREEN, BLUE]), fps=fps, width=32)
    got = durations(data)
    assert len(got) == 3
    assert set(got) <= allowed_ms, got


@pytest.mark.parametrize(
    ("src_hw", "width", "expected_h"),
    [((60, 80), 512, 384), ((128, 128), 512, 512), ((90, 160), 100, 56), ((512, 256), 64, 128)],
)
def test_output_size_keeps_aspect_ratio(
    src_hw: tuple[int, int], width: int, expected_h: int
) -> None:
    h, w = src_hw
    data = encode_gif(solid_frames([RED, BLUE], h=h, w=w), fps=10, width=width)
    image = Image.open(io.BytesIO(data))
    assert image.width == width
    assert abs(image.height - h * width / w) <= 1
    assert image.height == expected_h
    assert image.height % 2 == 0


def test_single_frame() -> None:
    data = encode_gif(solid_frames([RED]), fps=12, width=64)
    assert data.startswith(b"GIF89a")
    image, frames = decode(data)
    assert len(frames) == 1
    assert image.size == (64, 48)
    assert image.info["loop"] == 0
    assert_close_rgb(frames[0], RED)


def test_gradient_frames_are_distinct_and_sized() -> None:
    y, x = np.mgrid[0:64, 0:96]
    frames = np.stack(
        [
            np.stack([(x * 2 + i * 40) % 256, y * 4 % 256, np.full_like(x, i * 60)], axis=-1)
            for i in range(4)
        ]
    ).astype(np.uint8)
    data = encode_gif(frames, fps=12, width=192)
    image, decoded = decode(data)
    assert len(decoded) == 4
    assert image.size == (192, 128)
    means = [mean_rgb(f) for f in decoded]
    for a, b in itertools.pairwise(means):
        assert np.abs(a - b).max() > 10


def test_noncontiguous_input() -> None:
    frames = solid_frames([RED, GREEN], h=40, w=80)[:, :, ::2]  # strided view, 40x40
    image, decoded = decode(encode_gif(frames, fps=10, width=32))
    assert image.size == (32, 32)
    assert_close_rgb(decoded[1], GREEN)


def test_random_content_512() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(12, 128, 128, 3), dtype=np.uint8)
    image, decoded = decode(encode_gif(frames, fps=12, width=512))
    assert len(decoded) == 12
    assert image.size == (512, 512)


GOOD = solid_frames([RED, GREEN])


@pytest.mark.parametrize(
    ("frames", "fps", "width", "match"),
    [
        (GOOD.astype(np.float32), 12, 64, "uint8"),
        (GOOD.astype(np.uint16), 12, 64, "uint8"),
        (GOOD.tolist(), 12, 64, "numpy"),
        (GOOD[0], 12, 64, "shape"),
        (GOOD[..., 0], 12, 64, "shape"),
        (np.zeros((2, 60, 80, 4), np.uint8), 12, 64, "shape"),
        (np.zeros((2, 60, 80, 1), np.uint8), 12, 64, "shape"),
        (np.zeros((0, 60, 80, 3), np.uint8), 12, 64, "at least one frame"),
        (np.zeros((2, 0, 80, 3), np.uint8), 12, 64, "non-zero"),
        (GOOD, 0, 64, "fps"),
        (GOOD, 61, 64, "fps"),
        (GOOD, -5, 64, "fps"),
        (GOOD, 12.0, 64, "fps"),
        (GOOD, True, 64, "fps"),
        (GOOD, 12, 15, "width"),
        (GOOD, 12, 2049, "width"),
        (GOOD, 12, 0, "width"),
        (GOOD, 12, 64.0, "width"),
    ],
)
def test_invalid_input_raises_value_error(frames: Any, fps: Any, width: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_gif(frames, fps, width)


@pytest.mark.parametrize(("fps", "width"), [(1, 16), (60, 2048)])
def test_boundary_values_are_accepted(fps: int, width: int) -> None:
    data = encode_gif(solid_frames([RED, BLUE], h=8, w=8), fps=fps, width=width)
    assert Image.open(io.BytesIO(data)).size == (width, width)


# ---- WebP and MP4, the engine's writes, the config ---------------------------------------


def decode_any(fmt: str, data: bytes) -> tuple[int, tuple[int, int]]:
    """Frame count and (width, height); FFmpeg cannot decode animated WebP, Pillow can."""
    if fmt == "mp4":
        with av.open(io.BytesIO(data), "r") as container:
            frames = list(container.decode(video=0))
            return len(frames), (frames[0].width, frames[0].height)
    image = Image.open(io.BytesIO(data))
    return getattr(image, "n_frames", 1), image.size


def test_webp_is_animated_loops_and_keeps_colours() -> None:
    colours = [RED, GREEN, BLUE, YELLOW]
    data = encode_frames(solid_frames(colours), fps=12, width=160, encoding=ENCODINGS["webp"])

    image, frames = decode(data)
    assert image.format == "WEBP"
    assert getattr(image, "is_animated", False)
    assert image.size == (160, 120)
    assert image.info["loop"] == 0
    assert len(frames) == len(colours)
    for frame, colour in zip(frames, colours, strict=True):
        assert_close_rgb(frame, colour)
    assert {frame.info["duration"] for frame in frames} <= {83, 84}  # 1000 / 12 ms


def test_mp4_is_h264_yuv420p_faststart() -> None:
    colours = [RED, GREEN, BLUE, YELLOW, RED]
    data = encode_frames(solid_frames(colours), fps=12, width=160, encoding=ENCODINGS["mp4"])

    assert data.index(b"moov") < data.index(b"mdat")  # faststart: playable while downloading
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 12
        frames = [f.to_image() for f in container.decode(stream)]
    assert len(frames) == len(colours)
    assert frames[0].size == (160, 120)
    for frame, colour in zip(frames, colours, strict=True):
        assert_close_rgb(frame, colour)


class RecordingStore(LocalObjectStore):
    def __init__(self, root: Path) -> None:
        super().__init__(str(root), MediaSigner(b"test"))
        self.written: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> str:
        self.written[key] = data
        return super().put(key, data)


def test_engine_writes_every_format_and_the_gif_last(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    config = TranscoderConfig(fps=10, width=64, formats=["mp4", "gif", "webp"])
    pixels = solid_frames([RED, GREEN, BLUE])
    asset = TranscoderEngine(store, config).encode(
        Frames(pixels, {"seed": 7}), EncodeJob(storage_stem="s/v1", sidecar={"pk_id": "k"})
    )

    assert list(store.written) == [
        "s/v1.png",
        "s/v1.thumb.webp",
        "s/v1.json",
        "s/v1.mp4",
        "s/v1.webp",
        "s/v1.gif",
    ]
    assert asset.gif_key == "s/v1.gif"
    assert asset.asset_url == store.path("s/v1.gif").as_uri()
    formats = {"mp4": "s/v1.mp4", "webp": "s/v1.webp", "gif": "s/v1.gif"}
    assert asset.meta["formats"] == formats
    sidecar = json.loads(store.written["s/v1.json"])
    assert sidecar["formats"] == formats and sidecar["pk_id"] == "k" and sidecar["seed"] == 7
    for fmt, key in formats.items():
        assert asset.meta[f"{fmt}_bytes"] == sidecar[f"{fmt}_bytes"] == len(store.written[key])
        assert decode_any(fmt, store.written[key]) == (3, (64, 48)), fmt


def test_engine_default_writes_gif_only(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    asset = TranscoderEngine(store).encode(
        Frames(solid_frames([RED, BLUE])), EncodeJob(storage_stem="s/v2")
    )
    assert list(store.written) == ["s/v2.png", "s/v2.thumb.webp", "s/v2.json", "s/v2.gif"]
    assert asset.meta["formats"] == {"gif": "s/v2.gif"}


def test_a_variants_thumbnail_is_a_still_webp_of_the_size_asked(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    engine = TranscoderEngine(store, TranscoderConfig(thumbnail_px=40))
    pixels = solid_frames([RED, BLUE], h=60, w=80)
    asset = engine.encode(Frames(pixels), EncodeJob(storage_stem="s/v3"))
    assert asset.thumbnail_key == "s/v3.thumb.webp"
    with Image.open(io.BytesIO(store.written[asset.thumbnail_key])) as thumbnail:
        assert (thumbnail.format, thumbnail.size, getattr(thumbnail, "n_frames", 1)) == (
            "WEBP",
            (40, 30),  # the longest side, aspect kept
            1,
        )
        assert_close_rgb(thumbnail.convert("RGB"), RED)  # the cover: the first frame
    # a render smaller than thumbnail_px keeps its size
    small = TranscoderEngine(store, TranscoderConfig(thumbnail_px=256))
    asset = small.encode(Frames(pixels), EncodeJob(storage_stem="s/v4"))
    assert Image.open(io.BytesIO(store.written[asset.thumbnail_key])).size == (80, 60)


def test_a_variant_made_before_thumbnails_gets_one_written_once(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    engine = TranscoderEngine(store, TranscoderConfig(thumbnail_px=32))
    asset = engine.encode(Frames(solid_frames([GREEN, BLUE])), EncodeJob(storage_stem="s/old"))
    store.delete(asset.thumbnail_key)  # as a variant encoded before thumbnails were made
    old = Variant(
        variant_id="01JDQ4Z5V8AAAAAAAAAAAAAAAA",
        pk_id="k",
        soul_id="nova",
        asset_url=asset.asset_url,
        storage_key=asset.gif_key,
        meta={"cover_key": asset.cover_key},
    )
    store.written.clear()
    assert engine.thumbnail(old) == "s/old.thumb.webp"
    assert list(store.written) == ["s/old.thumb.webp"]
    assert Image.open(io.BytesIO(store.written["s/old.thumb.webp"])).size == (32, 24)
    store.written.clear()
    assert engine.thumbnail(old) == "s/old.thumb.webp"
    assert store.written == {}  # found, not written again
    no_cover = old.model_copy(update={"meta": {}, "storage_key": asset.gif_key})
    store.delete("s/old.thumb.webp")
    assert engine.thumbnail(no_cover) == "s/old.thumb.webp"  # from the GIF's first frame
    thumbnail = Image.open(io.BytesIO(store.written["s/old.thumb.webp"])).convert("RGB")
    assert_close_rgb(thumbnail, GREEN)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"formats": ["webp", "mp4"]}, "must include 'gif'"),
        ({"formats": []}, "must include 'gif'"),
        ({"formats": ["gif", "avi"]}, "'gif', 'webp' or 'mp4'"),
        ({"formats": ["gif", "mp4"], "width": 65}, "even width"),
    ],
)
def test_config_refuses_bad_formats(config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        TranscoderConfig.model_validate(config)


def test_config_refuses_a_format_without_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = replace(ENCODINGS["webp"], codecs=("no_such_encoder", "nor_this_one"))
    monkeypatch.setitem(ENCODINGS, "webp", missing)
    with pytest.raises(ValidationError, match=r"webp: .* no_such_encoder, nor_this_one"):
        TranscoderConfig(formats=["gif", "webp"])
    assert TranscoderConfig(formats=["gif"]).formats == ["gif"]


def test_encode_formats_benchmark_rows() -> None:
    rows = encode_formats(frames=3, width=64)
    assert [r["name"].split()[0] for r in rows] == ["gif", "gif", "webp", "mp4"]
    assert all(r["ms"] > 0 and r["bytes"] > 0 for r in rows), rows
