"""The scene graph: what a compiled script is, node by node, and its hash.

A ``SceneNode`` holds only structured fields (cast, environment, nature, props, mood, lighting,
camera, action, dialogue, notes, aspect) with every asset **pinned** (``asset_id@vN`` once the
asset's version is locked). ``graph_hash`` is the SHA-256 of the node's canonical JSON (sorted
keys, no spaces, UTF-8), leaving out only where the scene came from in the source text, so the
same scene compiled on any replica, in any process, hashes the same.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    computed_field,
    model_validator,
)

COMPILER_VERSION = "storyboard-compiler/1"

AssetType = Literal["character", "environment", "nature", "prop"]
Aspect = Literal["16:9", "4:3", "1:1"]
# SDXL's trained resolutions (its multi-aspect buckets) nearest to each aspect: width, height.
SDXL_SIZES: dict[str, tuple[int, int]] = {
    "16:9": (1344, 768),
    "4:3": (1152, 896),
    "1:1": (1024, 1024),
}
ShotSize = Literal[
    "extreme-wide", "wide", "full", "medium-wide", "medium", "medium-close-up", "close-up",
    "extreme-close-up",
]  # fmt: skip
Angle = Literal["eye-level", "low", "high", "overhead", "dutch"]


def canonical_json(value: Any) -> str:
    """The one spelling of a JSON value that hashes are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_of(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def without(data: Any, key: str) -> Any:
    """``data`` less a computed field's key, so what a model dumps validates back."""
    if isinstance(data, dict) and key in data:
        return {k: v for k, v in data.items() if k != key}
    return data


class Hashed(BaseModel):
    """A model whose dump carries its ``graph_hash``: reading a dump back checks it."""

    @model_validator(mode="wrap")
    @classmethod
    def _hash_matches(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        claimed = data.get("graph_hash") if isinstance(data, dict) else None
        model = handler(without(data, "graph_hash"))
        if claimed is not None and claimed != model.graph_hash:
            raise ValueError(f"graph_hash {claimed} does not match the graph ({model.graph_hash})")
        return model


class AssetPin(BaseModel):
    """A placeholder resolved to an asset: the name as written, the asset and its locked
    version (``None`` while the asset has none: the scene compiles but cannot render)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The name as the script wrote it.")
    asset_id: str
    asset_type: AssetType
    version: int | None = Field(default=None, ge=1, description="The locked version pinned.")

    @model_validator(mode="before")
    @classmethod
    def _computed_is_not_input(cls, data: Any) -> Any:
        return without(data, "pin")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pin(self) -> str | None:
        """``asset_id@vN``, or ``None`` while the asset has no locked version."""
        return f"{self.asset_id}@v{self.version}" if self.version is not None else None


class Camera(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shot_size: ShotSize = "medium"
    angle: Angle = "eye-level"

    def phrase(self) -> str:
        angle = "" if self.angle == "eye-level" else f", {self.angle} angle"
        return f"{self.shot_size.replace('-', ' ')} shot{angle}"


class Region(BaseModel):
    """A box in the frame as fractions of its width and height: left, top, right, bottom."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    left: float = Field(ge=0.0, le=1.0)
    top: float = Field(ge=0.0, le=1.0)
    right: float = Field(ge=0.0, le=1.0)
    bottom: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _not_empty(self) -> Region:
        if self.right <= self.left or self.bottom <= self.top:
            raise ValueError("a region needs right > left and bottom > top")
        return self


class DialogueLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    character: str = Field(description="The speaker's asset id.")
    extension: str | None = Field(default=None, description="V.O., O.S., CONT'D ...")
    parenthetical: str | None = None
    text: str


class Source(BaseModel):
    """Where the scene is in the script: a line (Fountain, YAML) and/or a path (JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    line: int | None = None
    path: str | None = None


class SceneNode(Hashed):
    """One scene of a compiled script."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_id: str
    scene_id: str
    scene_index: int = Field(ge=0)
    heading: str = ""
    setting: Literal["INT", "EXT", "INT/EXT", "EST", ""] = ""
    time_of_day: str | None = None
    characters: list[AssetPin] = Field(default_factory=list, description="The cast, in order.")
    environment: AssetPin | None = None
    nature: list[AssetPin] = Field(default_factory=list)
    props: list[AssetPin] = Field(default_factory=list)
    mood: str | None = None
    lighting: str | None = None
    camera: Camera = Field(default_factory=Camera)
    action: str = ""
    dialogue: list[DialogueLine] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    transitions: list[str] = Field(default_factory=list)
    aspect: Aspect = "16:9"
    regions: list[Region] | None = Field(
        default=None, description="Explicit regions, one per character in cast order."
    )
    compiler_version: str = COMPILER_VERSION
    source: Source = Field(default_factory=Source, description="Not part of the hash.")

    @property
    def size(self) -> tuple[int, int]:
        """The SDXL size this scene renders at: width, height in pixels."""
        return SDXL_SIZES[self.aspect]

    @property
    def assets(self) -> list[AssetPin]:
        """Every asset the scene pins: cast, environment, nature, props."""
        env = [self.environment] if self.environment else []
        return [*self.characters, *env, *self.nature, *self.props]

    def hashed_form(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"source", "graph_hash"})

    @computed_field  # type: ignore[prop-decorator]
    @property
    def graph_hash(self) -> str:
        return sha256_of(self.hashed_form())


class ScriptGraph(Hashed):
    """A compiled script: its scenes in order, and the compiler that made them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_id: str
    title: str = ""
    form: Literal["fountain", "structured"]
    compiler_version: str = COMPILER_VERSION
    scenes: list[SceneNode]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def graph_hash(self) -> str:
        """The hash over the scenes' hashes, in order (and the title, form and compiler)."""
        return sha256_of(
            {
                "title": self.title,
                "form": self.form,
                "compiler_version": self.compiler_version,
                "scenes": [scene.graph_hash for scene in self.scenes],
            }
        )
