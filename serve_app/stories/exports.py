"""Exports, pure functions over frames (their image bytes and their scene): what a frame's notes
say, and the image sequence: a zip of the frames numbered in order with a manifest.

The zip holds ``frames/0001_S01_<frame_id>.png``… (the bytes as stored, never re-encoded, so
each file's SHA-256 is the stored object's) and ``manifest.json``: per frame its file, id,
scene, index, render version, seed, pipeline version and hash, graph hash, SHA-256 and size.
Entries carry a fixed timestamp, so the same frames give the same zip. ``verify_sequence`` is
the reader's check that a zip's manifest matches its files. The PDF sheet is ``sheet.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serve_app.errors import InvalidRequest
from serve_app.stories.graph import SceneNode

MANIFEST = "manifest.json"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpg", b"RIFF": "webp"}


class ExportFrame(BaseModel):
    """One frame to export: the image as stored and what it was rendered from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame_id: str
    scene: SceneNode
    frame_index: int = Field(ge=0)
    render_version: int = Field(ge=1)
    image: bytes = Field(repr=False, description="The stored image file (PNG, JPEG or WebP).")
    seed: int
    pipeline_version: str
    pipeline_hash: str
    status: str = "approved"


class CastEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    pin: str | None = None
    description: str = ""


class Cover(BaseModel):
    """The sheet's first page: the project and its cast."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_id: str
    project_name: str
    title: str = ""
    cast: list[CastEntry] = Field(default_factory=list)


def notes(scene: SceneNode) -> list[tuple[str, str]]:
    """What the sheet prints under a frame, label and text, in order."""
    names = {pin.asset_id: pin.name for pin in scene.characters}
    lines = []
    for line in scene.dialogue:
        who = names.get(line.character, line.character)
        ext = f" ({line.extension})" if line.extension else ""
        aside = f"({line.parenthetical}) " if line.parenthetical else ""
        lines.append(f"{who}{ext}: {aside}{line.text}".strip())
    out = [
        ("Scene", scene.heading or scene.scene_id),
        ("Camera", scene.camera.phrase()),
        ("Mood", scene.mood or ""),
        ("Lighting", scene.lighting or ""),
        ("Action", scene.action),
        ("Dialogue", " / ".join(lines)),
        ("Notes", "; ".join(scene.notes)),
    ]
    return [(label, text) for label, text in out if text]


def extension_of(image: bytes) -> str:
    for signature, ext in SIGNATURES.items():
        if image.startswith(signature):
            return ext
    raise InvalidRequest("a frame's image is not PNG, JPEG or WebP")


def file_name(position: int, frame: ExportFrame) -> str:
    ext = extension_of(frame.image)
    return f"frames/{position:04d}_{frame.scene.scene_id}_{frame.frame_id}.{ext}"


def image_sequence(
    frames: list[ExportFrame], project_id: str, created_at: str, print_ready: bool = False
) -> bytes:
    """The zip of ``frames`` in the order given (the timeline's), with its manifest
    (``print_ready``: the images are the frames' prints, which the manifest says)."""
    entries: list[dict[str, Any]] = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for position, frame in enumerate(frames, start=1):
            name = file_name(position, frame)
            archive.writestr(zipfile.ZipInfo(name, ZIP_TIME), frame.image, zipfile.ZIP_STORED)
            entries.append(
                {
                    "position": position,
                    "file": name,
                    "frame_id": frame.frame_id,
                    "scene_id": frame.scene.scene_id,
                    "frame_index": frame.frame_index,
                    "render_version": frame.render_version,
                    "status": frame.status,
                    "seed": frame.seed,
                    "pipeline_version": frame.pipeline_version,
                    "pipeline_hash": frame.pipeline_hash,
                    "graph_hash": frame.scene.graph_hash,
                    "compiler_version": frame.scene.compiler_version,
                    "sha256": hashlib.sha256(frame.image).hexdigest(),
                    "bytes": len(frame.image),
                }
            )
        manifest = {
            "project_id": project_id,
            "created_at": created_at,
            "frame_count": len(entries),
            "print_ready": print_ready,
            "frames": entries,
        }
        archive.writestr(
            zipfile.ZipInfo(MANIFEST, ZIP_TIME),
            json.dumps(manifest, indent=2, sort_keys=True),
            zipfile.ZIP_DEFLATED,
        )
    return buffer.getvalue()


def verify_sequence(data: bytes) -> list[str]:
    """What is wrong with an image-sequence zip: every file the manifest lists is there with its
    SHA-256 and size, and nothing else is; empty when it is sound."""
    problems = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = set(archive.namelist())
        if MANIFEST not in names:
            return [f"no {MANIFEST}"]
        manifest = json.loads(archive.read(MANIFEST))
        listed = {entry["file"]: entry for entry in manifest["frames"]}
        for name, entry in listed.items():
            if name not in names:
                problems.append(f"{name}: listed, not in the zip")
                continue
            content = archive.read(name)
            if hashlib.sha256(content).hexdigest() != entry["sha256"]:
                problems.append(f"{name}: SHA-256 differs from the manifest")
            if len(content) != entry["bytes"]:
                problems.append(f"{name}: size differs from the manifest")
        problems += [f"{name}: in the zip, not listed" for name in names - set(listed) - {MANIFEST}]
        if manifest["frame_count"] != len(listed):
            problems.append("frame_count differs from the frames listed")
    return problems
