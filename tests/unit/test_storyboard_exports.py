"""Exports: the storyboard PDF opens with a cover and one page per N frames, the notes under each
frame as extractable text; the image-sequence zip's manifest matches its files."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader

from serve_app.errors import InvalidRequest
from serve_app.stories.compiler import compile_script
from serve_app.stories.composition import frame_seed
from serve_app.stories.exports import (
    MANIFEST,
    CastEntry,
    Cover,
    ExportFrame,
    image_sequence,
    notes,
    verify_sequence,
)
from serve_app.stories.graph import SceneNode
from serve_app.stories.sheet import page_count, storyboard_pdf
from tests.unit.storyboard_assets import directory

DATA = Path(__file__).resolve().parents[1] / "data" / "storyboards"
COVER = Cover(
    project_id="P1",
    project_name="College Silence",
    title="The Lighthouse Keeper",
    cast=[
        CastEntry(name="Nova", pin="CHAR_NOVA@v3", description="the keeper's daughter"),
        CastEntry(name="Marco", pin="CHAR_MARCO@v1"),
    ],
)


def png(colour: tuple[int, int, int], size: tuple[int, int] = (96, 54)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def scenes() -> list[SceneNode]:
    text = (DATA / "lighthouse.fountain").read_text(encoding="utf-8")
    return compile_script("P1", text, directory()).scenes


def frames(count: int) -> list[ExportFrame]:
    all_scenes = scenes()
    out = []
    for n in range(count):
        scene = all_scenes[n % len(all_scenes)]
        index = n // len(all_scenes)
        out.append(
            ExportFrame(
                frame_id=f"FR_{scene.scene_id}_{index:03d}",
                scene=scene,
                frame_index=index,
                render_version=1 + n % 2,
                image=png((40 * n % 256, 90, 160), (96, 54) if n % 2 else (64, 64)),
                seed=frame_seed("P1", scene.scene_id, index).seed,
                pipeline_version="storyboard-sdxl-regional-ip-adapter/1",
                pipeline_hash=f"sha256:{n:064x}",
            )
        )
    return out


def text_of(pdf: bytes) -> tuple[int, list[str]]:
    reader = PdfReader(io.BytesIO(pdf))
    return len(reader.pages), [" ".join(page.extract_text().split()) for page in reader.pages]


@pytest.mark.parametrize(("count", "per_page"), [(5, 2), (3, 1), (5, 4)])
def test_the_pdf_has_a_cover_and_one_page_per_n_frames(count: int, per_page: int) -> None:
    pdf = storyboard_pdf(COVER, frames(count), per_page=per_page)  # type: ignore[arg-type]
    assert pdf.startswith(b"%PDF-")
    pages, texts = text_of(pdf)
    assert pages == page_count(count, per_page) == 1 + -(-count // per_page)  # type: ignore[arg-type]
    cover = texts[0]
    for words in ("The Lighthouse Keeper", "College Silence (P1)", "Cast", "CHAR_NOVA@v3", "Marco"):
        assert words in cover


def test_the_notes_under_each_frame_are_text() -> None:
    cliff, lamp_room, harbor = scenes()
    _, texts = text_of(storyboard_pdf(COVER, frames(3), per_page=1))
    cliff_page, lamp_page, harbor_page = texts[1:]
    assert "EXT. LIGHTHOUSE CLIFF - DUSK" in cliff_page
    assert "Camera: wide shot, low angle" in cliff_page
    assert "Mood: tense" in cliff_page and "Lighting: golden hour backlight" in cliff_page
    assert "Wind tears across the grass." in cliff_page
    assert "NOVA: (shouting over the wind) Marco! The lamp is out!" in cliff_page
    assert "MARCO (O.S.): I know! Get inside!" in cliff_page
    assert "Camera: close up shot" in lamp_page and "Then who?" in lamp_page
    assert "Boats knock together in the dark." in harbor_page
    assert [label for label, _ in notes(cliff)] == [
        "Scene", "Camera", "Mood", "Lighting", "Action", "Dialogue", "Notes",
    ]  # fmt: skip
    assert lamp_room.mood is None and "Mood" not in dict(notes(lamp_room))
    assert harbor.dialogue == []


def test_text_outside_latin_1_and_long_notes_keep_the_page_count() -> None:
    scene = scenes()[0].model_copy(
        update={"action": "\u201cQuoted\u201d \u2014 and an emoji \U0001f30a " + "word " * 2000}
    )
    frame = frames(1)[0].model_copy(update={"scene": scene})
    pages, texts = text_of(storyboard_pdf(COVER, [frame, frame, frame], per_page=2))
    assert pages == 3
    assert '"Quoted" -- and an emoji ?' in texts[1] and "..." in texts[1]


def test_the_zip_holds_the_frames_in_order_with_a_manifest_that_matches() -> None:
    given = frames(5)
    data = image_sequence(given, "P1", "2026-12-07T13:00:00Z")
    assert verify_sequence(data) == []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest = json.loads(archive.read(MANIFEST))
        assert manifest["project_id"] == "P1" and manifest["frame_count"] == 5
        entries = manifest["frames"]
        assert [e["frame_id"] for e in entries] == [f.frame_id for f in given]
        assert [e["file"] for e in entries] == sorted(e["file"] for e in entries)
        for entry, frame in zip(entries, given, strict=True):
            content = archive.read(entry["file"])
            assert content == frame.image  # as stored, not re-encoded
            assert entry["sha256"] == hashlib.sha256(content).hexdigest()
            assert entry["graph_hash"] == frame.scene.graph_hash
            assert (entry["seed"], entry["render_version"]) == (frame.seed, frame.render_version)
            assert entry["pipeline_version"] == frame.pipeline_version
            assert entry["pipeline_hash"] == frame.pipeline_hash
        assert entries[0]["file"] == "frames/0001_S01_FR_S01_000.png"
    assert image_sequence(given, "P1", "2026-12-07T13:00:00Z") == data  # same frames, same zip


def test_a_zip_that_differs_from_its_manifest_is_found_out() -> None:
    data = image_sequence(frames(2), "P1", "2026-12-07T13:00:00Z")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        items = {name: archive.read(name) for name in archive.namelist()}
    first = next(name for name in items if name.startswith("frames/0001"))
    items[first] = png((1, 2, 3))
    items["frames/extra.png"] = png((0, 0, 0))
    tampered = io.BytesIO()
    with zipfile.ZipFile(tampered, "w") as archive:
        for name, content in items.items():
            archive.writestr(name, content)
    problems = verify_sequence(tampered.getvalue())
    assert f"{first}: SHA-256 differs from the manifest" in problems
    assert "frames/extra.png: in the zip, not listed" in problems


def test_a_frame_that_is_not_an_image_is_refused() -> None:
    frame = frames(1)[0].model_copy(update={"image": b"not an image"})
    with pytest.raises(InvalidRequest, match="not PNG"):
        image_sequence([frame], "P1", "2026-12-07T13:00:00Z")
