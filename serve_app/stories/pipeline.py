"""A frame's render described as data: a versioned pipeline whose steps are JSON and whose hash
is stored with the frame; exportable as a ComfyUI API prompt for interchange.

``PIPELINE_VERSION`` names the shape of the steps (a new step or a changed meaning is a new
version); ``pipeline_hash`` covers the version and every step's parameters (prompt, seed, size,
pins, regions), so two frames share a hash exactly when they were rendered the same way.

Steps, in order: ``load_model`` → ``encode`` (positive, negative) → per character a ``mask``
(its region) and an ``ip_adapter`` on that mask at the identity's strength → the same for each
placement (``scenery.placements``: each prop with a locked image in its region at the
project's prop strength, then each further environment or nature image over the whole frame at
its scenery strength; ``prop_mask{i}``/``prop{i}``, ``scenery_mask{i}``/``scenery{i}``) → the
latent: with a backdrop (``composition.backdrop``: the environment's, else nature's, locked
image) ``load_image`` (centre-cropped to the frame) and ``encode_image``, sampled at the backdrop's
strength (``denoise``); without one ``empty_latent`` → ``sample`` (the inherited seed) →
``decode`` → ``save``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from serve_app.stories.composition import (
    PinnedAsset,
    RenderPrompt,
    SeedPlan,
    backdrop,
    pinned,
    pixel_box,
    regions_of,
)
from serve_app.stories.graph import Region, SceneNode, sha256_of, without
from serve_app.stories.scenery import Placement, placements

# 2: the backdrop by img2img; 3: props in their regions, further scenery over the whole frame
PIPELINE_VERSION = "storyboard-sdxl-regional-ip-adapter/3"


class RenderSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_model: str = Field(description="The checkpoint (a model ref or a file name).")
    steps: int = Field(default=30, ge=1, le=150)
    cfg: float = Field(default=6.0, ge=0.0, le=30.0)
    sampler: str = "dpmpp_2m"
    scheduler: str = "karras"
    environment_strength: float = Field(
        default=0.6,
        gt=0.0,
        le=1.0,
        description="img2img strength a frame starts from its backdrop with (the project's "
        "composition.environment_strength).",
    )
    prop_strength: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="IP-Adapter scale of each prop's image in its region (the project's "
        "composition.prop_strength).",
    )
    scenery_strength: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="IP-Adapter scale of each further environment or nature image over the "
        "whole frame (the project's composition.scenery_strength).",
    )

    def placements(self, scene: SceneNode, assets: Mapping[str, PinnedAsset]) -> list[Placement]:
        """What conditions ``scene``'s frames besides its cast, at these strengths."""
        return placements(scene, assets, self.prop_strength, self.scenery_strength)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    op: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(
        default_factory=dict, description="Input name → 'step_id.output' of an earlier step."
    )


class PipelineDescription(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline_version: str = PIPELINE_VERSION
    steps: list[Step]

    @model_validator(mode="before")
    @classmethod
    def _computed_is_not_input(cls, data: Any) -> Any:
        return without(data, "pipeline_hash")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pipeline_hash(self) -> str:
        return sha256_of(self.model_dump(mode="json", exclude={"pipeline_hash"}))


def describe(
    scene: SceneNode,
    prompt: RenderPrompt,
    seed: SeedPlan,
    assets: Mapping[str, PinnedAsset],
    settings: RenderSettings,
) -> PipelineDescription:
    """The steps that render frame ``seed.frame_index`` of ``scene`` (a 409 first if any of its
    assets is unlocked or not in ``assets``)."""
    pinned(scene, assets)
    width, height = scene.size
    steps = [
        Step(id="model", op="load_model", params={"base_model": settings.base_model}),
        Step(
            id="positive",
            op="encode",
            params={"text": prompt.prompt},
            inputs={"clip": "model.clip"},
        ),
        Step(
            id="negative",
            op="encode",
            params={"text": prompt.negative_prompt},
            inputs={"clip": "model.clip"},
        ),
    ]
    unet = "model.model"
    regions = regions_of(scene)
    conditioned = [(c.pin, r) for c, r in zip(scene.characters, regions, strict=True) if c.pin]
    for index, (pin, region) in enumerate(conditioned):
        asset = assets[pin]
        if asset.reference is None:
            continue  # nothing to condition on: the canonical prompt alone carries it
        adapter = {"pin": pin, "image": asset.reference, "weight": asset.strength}
        ids = (f"mask{index}", f"ip{index}")
        unet = masked_adapter(steps, unet, ids, region, (width, height), adapter)
    placed = Counter[str]()
    for placement in settings.placements(scene, assets):
        role, index = placement.role, placed[placement.role]
        placed[role] += 1
        adapter = {"pin": placement.pin, "image": placement.image, "weight": placement.strength}
        ids = (f"{role}_mask{index}", f"{role}{index}")
        unet = masked_adapter(steps, unet, ids, placement.region, (width, height), adapter)
    sampling: dict[str, Any] = {
        "seed": seed.seed,
        "steps": settings.steps,
        "cfg": settings.cfg,
        "sampler": settings.sampler,
        "scheduler": settings.scheduler,
    }
    start = backdrop(scene, assets, settings.environment_strength)
    if start is None:
        size = {"width": width, "height": height, "batch_size": 1}
        steps.append(Step(id="latent", op="empty_latent", params=size))
    else:
        image = {"pin": start.pin, "image": start.image, "width": width, "height": height}
        steps += [
            Step(id="backdrop", op="load_image", params=image),
            Step(
                id="latent",
                op="encode_image",
                inputs={"pixels": "backdrop.image", "vae": "model.vae"},
            ),
        ]
        sampling["denoise"] = start.strength
    steps += [
        Step(
            id="sample",
            op="sample",
            params=sampling,
            inputs={
                "model": unet,
                "positive": "positive.conditioning",
                "negative": "negative.conditioning",
                "latent": "latent.latent",
            },
        ),
        Step(id="decode", op="decode", inputs={"samples": "sample.latent", "vae": "model.vae"}),
        Step(
            id="save",
            op="save",
            params={"prefix": f"{scene.project_id}/{scene.scene_id}/frame_{seed.frame_index:03d}"},
            inputs={"images": "decode.image"},
        ),
    ]
    return PipelineDescription(steps=steps)


def masked_adapter(
    steps: list[Step],
    unet: str,
    ids: tuple[str, str],
    region: Region,
    size: tuple[int, int],
    adapter: dict[str, Any],
) -> str:
    """Appends a ``mask`` of ``region`` at the frame's ``size`` and an ``ip_adapter`` on it
    (``adapter``: its pin, image and weight) chained after ``unet``; the model it outputs."""
    mask_id, step_id = ids
    width, height = size
    box = pixel_box(region, (width, height))
    params = {"width": width, "height": height, "box": list(box)} | region.model_dump()
    steps.append(Step(id=mask_id, op="mask", params=params))
    inputs = {"model": unet, "mask": f"{mask_id}.mask"}
    steps.append(Step(id=step_id, op="ip_adapter", params=adapter, inputs=inputs))
    return f"{step_id}.model"
