"""What conditions a frame besides its cast, pure: its props, each in a region of its own, and
the further environment and nature images over the whole frame.

- **Props**: each prop of the scene whose pinned version has a locked image is one more
  IP-Adapter image beside the cast (its image embedding as one more masked "person"), at the
  project's ``composition.prop_strength``. Its region is laid out as the cast's are
  (``composition.layout``), from the scene alone: the frame split into equal slots left to
  right in the scene's prop order, each prop the middle of its slot by the shot size's width
  (``FRAMING``), standing in the foreground, the lower ``PROP_DEPTH`` of the frame (a prop's
  box may overlap a character's: each image attends only inside its own mask). A prop without
  an image is left to its canonical prompt.
- **Scenery**: the first environment (else nature) image is the frame's backdrop, its img2img
  start (``composition.backdrop``); every further environment or nature asset of the scene with
  a locked image conditions the **whole** frame through the IP-Adapter (a mask of the frame) at
  ``composition.scenery_strength``, in the scene's order (environment, then nature).

``placements`` is what a frame version stores (``FrameVersion.placements``) and its pipeline
describes, so the pipeline hash covers every prop's region and strength; the render job hands
the Renderer the cast and then these, in that order (``Placement.conditioning``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.characters.verdicts import IdentityConditioning, RegionIdentity
from serve_app.stories.composition import FRAMING, PinnedAsset, backdrop
from serve_app.stories.graph import AssetPin, AssetType, Camera, Region, SceneNode

PROP_DEPTH = 0.4  # the foreground band props stand in: the lower 40% of the frame
WHOLE_FRAME = Region(left=0.0, top=0.0, right=1.0, bottom=1.0)


class Placement(BaseModel):
    """An asset version's locked image conditioning one region of a frame by IP-Adapter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    asset_id: str
    version: int = Field(ge=1, description="The locked version pinned.")
    asset_type: AssetType
    image: str = Field(description="Object key of the version's image the embeds are from.")
    region: Region
    strength: float = Field(ge=0.0, le=1.0, description="IP-Adapter scale of the image.")

    @property
    def pin(self) -> str:
        return f"{self.asset_id}@v{self.version}"

    @property
    def role(self) -> Literal["prop", "scenery"]:
        """A prop in its region, or scenery over the whole frame."""
        return "prop" if self.asset_type == "prop" else "scenery"

    def conditioning(self) -> RegionIdentity:
        """The placement as the Renderer takes a cast member (``RenderJob.cast``)."""
        identity = IdentityConditioning(
            soul_id=self.asset_id,
            version=self.version,
            reference_keys=[self.image],
            strength=self.strength,
        )
        r = self.region
        return RegionIdentity(identity=identity, box=(r.left, r.top, r.right, r.bottom))


def prop_layout(count: int, camera: Camera) -> list[Region]:
    """One region per prop, left to right in the scene's order, inside equal slots of the
    foreground band."""
    width, _ = FRAMING[camera.shot_size]
    slot = 1.0 / count if count else 1.0
    margin = slot * (1.0 - width) / 2
    return [
        Region(
            left=round(i * slot + margin, 6),
            top=round(1.0 - PROP_DEPTH, 6),
            right=round((i + 1) * slot - margin, 6),
            bottom=1.0,
        )
        for i in range(count)
    ]


def placements(
    scene: SceneNode,
    assets: Mapping[str, PinnedAsset],
    prop_strength: float,
    scenery_strength: float,
) -> list[Placement]:
    """The scene's props with a locked image in their regions, then its further scenery
    images over the whole frame (the backdrop itself is not one: it is the img2img start)."""
    props = [(pin, image) for pin in scene.props if (image := image_of(pin, assets))]
    regions = prop_layout(len(props), scene.camera)
    out = [
        placed(pin, image, region, prop_strength)
        for (pin, image), region in zip(props, regions, strict=True)
    ]
    start = backdrop(scene, assets, 1.0)
    env = [scene.environment] if scene.environment else []
    for pin in [*env, *scene.nature]:
        image = image_of(pin, assets)
        if image is not None and start is not None and pin.pin != start.pin:
            out.append(placed(pin, image, WHOLE_FRAME, scenery_strength))
    return out


def image_of(pin: AssetPin, assets: Mapping[str, PinnedAsset]) -> str | None:
    """The locked image of a pinned version, if the registry holds one."""
    asset = assets.get(pin.pin or "")
    return None if asset is None else asset.reference


def placed(pin: AssetPin, image: str, region: Region, strength: float) -> Placement:
    assert pin.version is not None  # only locked pins reach the registry
    return Placement(
        asset_id=pin.asset_id,
        version=pin.version,
        asset_type=pin.asset_type,
        image=image,
        region=region,
        strength=strength,
    )
