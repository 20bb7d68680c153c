"""Composition, pure: what a scene's frame is rendered from.

- **The prompt** is built from the scene's structured fields and the pinned assets' canonical
  prompts only, in a fixed order (style anchor, camera, setting and time, environment, nature,
  cast, props, action, mood, lighting); nothing else can reach it, so the gate recomputes it
  and compares (``prompt_matches``).
- **The seed** is inherited: SHA-256 of ``project_id/scene_id/frame_index/reseed``, so a
  re-render is the same frame unless a new seed is asked for (``reseed`` + 1), and the gate
  can check any stored seed (``follows_inheritance``).
- **Regions**: one per character, in cast order, explicit in the scene or laid out from the cast
  and the camera: the frame split into equal slots left to right, each character framed in its
  slot by shot size and angle (``FRAMING``). ``masks`` draws them at the frame's **pixel** size
  (the aspect's SDXL size), the size diffusers' ``IPAdapterMaskProcessor`` takes (it scales
  them to each attention layer itself); ``latent_size`` is that size / 8. ``cast`` hands the
  Renderer each character's identity (its pinned version's image, at its strength) with its
  region, which the Renderer draws as that identity's IP-Adapter mask at the render size: the
  scene's aspect at the Renderer's pixel area (``diffusion/sizes.py``), the aspect's SDXL size
  on a 1024² Renderer to within 2%.
- **The backdrop**: a scene whose environment (else its first nature asset) has a locked image
  starts from that image by img2img at the project's ``environment_strength`` (``backdrop``);
  a scene without one starts from noise, as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Literal

from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field

from serve_app.characters.verdicts import IdentityConditioning, RegionIdentity
from serve_app.errors import Conflict
from serve_app.stories.assets import require_locked
from serve_app.stories.graph import AssetType, Camera, Region, SceneNode, sha256_of

MAX_SEED = 2**31 - 1
SEED_RULE = "int(sha256('{project_id}/{scene_id}/{frame_index}/{reseed}')[:8]) % 2**31"
# Width of its slot a character takes, and where its region starts from the top, by shot size.
FRAMING: dict[str, tuple[float, float]] = {
    "extreme-wide": (0.5, 0.45),
    "wide": (0.7, 0.3),
    "full": (0.8, 0.1),
    "medium-wide": (0.9, 0.05),
    "medium": (1.0, 0.0),
    "medium-close-up": (1.0, 0.0),
    "close-up": (1.0, 0.0),
    "extreme-close-up": (1.0, 0.0),
}
# How an angle moves a region's top: a low camera makes figures loom, a high one shrinks them.
ANGLE_TOP: dict[str, float] = {
    "eye-level": 1.0,
    "low": 0.5,
    "high": 1.5,
    "overhead": 0.0,
    "dutch": 1.0,
}


class PinnedAsset(BaseModel):
    """What the project's asset registry hands composition for one pin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pin: str = Field(description="asset_id@vN")
    asset_type: AssetType
    canonical_prompt: str
    negative_prompt: str = ""
    reference: str | None = Field(
        default=None, description="Object key of the image its IP-Adapter embeds are from."
    )
    strength: float = Field(default=0.6, ge=0.0, le=1.0, description="IP-Adapter scale.")


class ProjectStyle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project_id: str
    style_anchor_prompt: str = ""
    negative_prompt: str = ""


class RenderPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    negative_prompt: str

    @property
    def prompt_hash(self) -> str:
        return sha256_of(self.model_dump())


class Blocker(BaseModel):
    """Something that stops a scene rendering (what ``:validate`` reports)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["unlocked_asset", "unknown_pin"]
    name: str = Field(description="The name as the script wrote it.")
    asset_id: str
    pin: str | None = None
    message: str


def blockers(scene: SceneNode, assets: Mapping[str, PinnedAsset]) -> list[Blocker]:
    """Every asset of the scene that has no locked version, or whose pinned version the
    registry does not hand over (``assets``: pin → what composition reads)."""
    out = []
    for asset in scene.assets:
        if asset.pin is None:
            message = f"{asset.name} ({asset.asset_id}) has no locked version: lock it, recompile"
            out.append(
                Blocker(
                    kind="unlocked_asset", name=asset.name, asset_id=asset.asset_id, message=message
                )
            )
        elif asset.pin not in assets:
            message = f"{asset.pin} is not a locked version the project holds"
            out.append(
                Blocker(
                    kind="unknown_pin",
                    name=asset.name,
                    asset_id=asset.asset_id,
                    pin=asset.pin,
                    message=message,
                )
            )
    return out


def pinned(scene: SceneNode, assets: Mapping[str, PinnedAsset]) -> list[PinnedAsset]:
    """The scene's assets in order (cast, environment, nature, props): every one locked and
    known to the registry, or a 409 naming what is not."""
    require_locked(scene)
    if found := blockers(scene, assets):
        missing = ", ".join(b.pin or b.asset_id for b in found)
        raise Conflict(f"scene {scene.scene_id}: no locked version found for {missing}")
    return [assets[a.pin] for a in scene.assets if a.pin is not None]


def render_prompt(
    scene: SceneNode, assets: Mapping[str, PinnedAsset], style: ProjectStyle
) -> RenderPrompt:
    def prompts(kind: AssetType) -> list[str]:
        return [a.canonical_prompt for a in by_pin if a.asset_type == kind]

    by_pin = pinned(scene, assets)
    setting = {"INT": "interior", "EXT": "exterior", "INT/EXT": "interior and exterior"}
    parts = [
        style.style_anchor_prompt,
        scene.camera.phrase(),
        setting.get(scene.setting, ""),
        (scene.time_of_day or "").lower(),
        *prompts("environment"),
        *prompts("nature"),
        *prompts("character"),
        *prompts("prop"),
        scene.action,
        f"{scene.mood} mood" if scene.mood else "",
        f"{scene.lighting} lighting" if scene.lighting else "",
    ]
    negatives = [style.negative_prompt, *(a.negative_prompt for a in by_pin)]
    return RenderPrompt(prompt=join(parts), negative_prompt=join(negatives))


def join(parts: list[str]) -> str:
    """Comma-separated, each phrase once, empty ones left out."""
    seen: dict[str, None] = {}
    for part in parts:
        for phrase in part.split(","):
            if phrase.strip():
                seen.setdefault(" ".join(phrase.split()), None)
    return ", ".join(seen)


def prompt_matches(
    stored: RenderPrompt, scene: SceneNode, assets: Mapping[str, PinnedAsset], style: ProjectStyle
) -> bool:
    """The gate's check: the prompt a frame was rendered with is the one its scene compiles to."""
    return stored == render_prompt(scene, assets, style)


class SeedPlan(BaseModel):
    """A frame's seed and how it was derived (stored with the frame)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_id: str
    scene_id: str
    frame_index: int = Field(ge=0)
    reseed: int = Field(default=0, ge=0, description="0 inherits; each new seed asked adds 1.")
    seed: int = Field(ge=0, le=MAX_SEED)
    rule: str = SEED_RULE


def frame_seed(project_id: str, scene_id: str, frame_index: int, reseed: int = 0) -> SeedPlan:
    key = f"{project_id}/{scene_id}/{frame_index}/{reseed}".encode()
    seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % (MAX_SEED + 1)
    return SeedPlan(
        project_id=project_id,
        scene_id=scene_id,
        frame_index=frame_index,
        reseed=reseed,
        seed=seed,
    )


def follows_inheritance(plan: SeedPlan) -> bool:
    """The gate's check: the stored seed is the one the rule gives."""
    expected = frame_seed(plan.project_id, plan.scene_id, plan.frame_index, plan.reseed)
    return plan.rule == SEED_RULE and plan.seed == expected.seed


def layout(cast: int, camera: Camera) -> list[Region]:
    """One region per character, left to right in cast order, inside equal slots (so regions
    never overlap)."""
    width, top = FRAMING[camera.shot_size]
    top = min(top * ANGLE_TOP[camera.angle], 0.6)
    slot = 1.0 / cast if cast else 1.0
    margin = slot * (1.0 - width) / 2
    return [
        Region(
            left=round(i * slot + margin, 6),
            top=round(top, 6),
            right=round((i + 1) * slot - margin, 6),
            bottom=1.0,
        )
        for i in range(cast)
    ]


def regions_of(scene: SceneNode) -> list[Region]:
    """The scene's explicit regions, or the layout from its cast and camera."""
    if scene.regions is not None:
        return list(scene.regions)
    return layout(len(scene.characters), scene.camera)


def cast(scene: SceneNode, assets: Mapping[str, PinnedAsset]) -> list[RegionIdentity]:
    """Each character of the scene with an image to condition on, in cast order: its pinned
    version as an identity (the asset in the soul's place) masked to its region. A character
    without an image is left to its canonical prompt, as the pipeline description does."""
    out = []
    for character, region in zip(scene.characters, regions_of(scene), strict=True):
        asset = assets.get(character.pin or "")
        if asset is None or asset.reference is None or character.version is None:
            continue
        identity = IdentityConditioning(
            soul_id=character.asset_id,
            version=character.version,
            reference_keys=[asset.reference],
            strength=asset.strength,
        )
        box = (region.left, region.top, region.right, region.bottom)
        out.append(RegionIdentity(identity=identity, box=box))
    return out


def pixel_box(region: Region, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A region in pixels of a ``(width, height)`` frame: left, top, right, bottom (exclusive)."""
    w, h = size
    left, right = round(region.left * w), round(region.right * w)
    return left, round(region.top * h), right, round(region.bottom * h)


def masks(regions: list[Region], size: tuple[int, int]) -> list[Image.Image]:
    """One mask per region at ``size`` (pixels, width by height): mode ``L``, 255 inside."""
    out = []
    for region in regions:
        mask = Image.new("L", size, 0)
        left, top, right, bottom = pixel_box(region, size)
        ImageDraw.Draw(mask).rectangle((left, top, right - 1, bottom - 1), fill=255)
        out.append(mask)
    return out


def latent_size(size: tuple[int, int]) -> tuple[int, int]:
    """The latent's width and height for a pixel size (SDXL's VAE scales by 8)."""
    return size[0] // 8, size[1] // 8


class Backdrop(BaseModel):
    """The image a frame starts from (img2img) and how far the frame departs from it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pin: str = Field(description="asset_id@vN of the environment (or nature) it is the image of.")
    image: str = Field(description="Object key of the asset version's image.")
    strength: float = Field(
        gt=0.0, le=1.0, description="img2img strength: near 0 keeps the image, 1 ignores it."
    )


def backdrop(
    scene: SceneNode, assets: Mapping[str, PinnedAsset], strength: float
) -> Backdrop | None:
    """The scene's environment's locked image, else its first nature asset's with one, at
    ``strength``; None when neither has an image (the frame starts from noise)."""
    env = [scene.environment] if scene.environment else []
    for pin in [*env, *scene.nature]:
        asset = assets.get(pin.pin or "")
        if asset is not None and asset.reference is not None:
            return Backdrop(pin=asset.pin, image=asset.reference, strength=strength)
    return None
