"""The ``scene_render`` job (``POST /v1/projects/{project_id}/scenes/{scene_id}/renders`` and
``…/renders/{render_job_id}:rerender``): frames of one scene, each a frame version planned by
the route before the job was queued (seed, exact prompt, pipeline hash already stored).

    items:  the planned frame versions, in order
    each:   rendered by the Renderer with exactly the stored prompt, negative prompt and seed,
            in the project's style (the path ``asset_generate`` renders by), each character
            conditioned on its pinned version's image in its own region of the frame (an
            IP-Adapter mask each: ``composition.cast``), then the planned placements (each
            prop's locked image in its own region, each further environment or nature image
            over the whole frame: ``stories/scenery.py``), at the scene's aspect (the Renderer
            keeps its pixel area: ``diffusion/sizes.py``; the masks are drawn at that size),
            started from the planned backdrop (the environment's or nature's locked image,
            img2img at the planned strength) when the frame version has one; a PNG at
            ``proj/{project_id}/frames/{frame_id}/v{n}.png`` (a retry writes it again); then the
            consistency gate (``stories/gate.py``): the frame's faces assigned to the cast
            by the Dedupe box, each character judged on its own face against the anchors of
            its pinned version's images, the frame against the project's style anchors and
            against each environment, nature and prop with a locked image (its drift: image
            embeddings by Dedupe's model, the version's kept in ``asset_image_embed``), the
            stored prompt against the one the scene compiles to now, the seed against the
            inheritance rule; recorded ``passed`` or ``needs_review`` with the full report,
            never silently accepted
    owner:  every read and write goes through the job's client (its API key's id)
    partial a render that fails for good fails its item only (the job ends ``partial``)
    settle  a frame version the job did not make (its item failed, or the whole job failed
            after its last attempt, or was cancelled) is ``failed`` with the error; the frame
            shows the version it showed before
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from serve_app.characters.verdicts import IdentityAnchors, IdentityThresholds, Verdict
from serve_app.errors import ServiceError
from serve_app.jobs.book import JobDoc
from serve_app.jobs.kinds.base import (
    Attempt,
    Ended,
    JobKind,
    JobTools,
    made_item_by_item,
    unfinished,
)
from serve_app.jobs.kinds.character_sheet import png_of
from serve_app.jobs.spec import Item, JobBase
from serve_app.projects.image_search import frames_of, image_embedding
from serve_app.projects.models import Project
from serve_app.prompts import style_id
from serve_app.schemas import Frames, RenderJob
from serve_app.storage.objects import ObjectStore
from serve_app.stories.composition import PinnedAsset, cast, follows_inheritance, render_prompt
from serve_app.stories.gate import (
    Check,
    GateConfig,
    asset_check,
    drift,
    identity_check,
    report,
    style_check,
)
from serve_app.stories.records import FrameVersion, Scene
from serve_app.stories.results import FailedFrame, RenderedFrame, SceneRenderResult
from serve_app.stories.scenery import image_of

MAX_ANCHORS = 256
ANCHORS: dict[tuple[str, ...], IdentityAnchors] = {}  # images' SHA-256s → their anchors


class FrameRef(BaseModel):
    frame_id: str = Field(pattern=r"^frm_[0-9a-z]{26}_[0-9]{3}_[0-9]{2}$")
    render_version: int = Field(ge=1)


class SceneRenderJob(JobBase):
    """Planned frame versions of one scene; ``soul_id`` is the project's id."""

    kind: Literal["scene_render"] = "scene_render"
    scene_id: str = Field(pattern=r"^scn_[0-9a-z]{26}_[0-9]{3}$")
    frames: list[FrameRef] = Field(min_length=1, max_length=16)
    gate: GateConfig = Field(default_factory=GateConfig)


def frame_key(project_id: str, frame_id: str, version: int) -> str:
    return f"proj/{project_id}/frames/{frame_id}/v{version}.png"


class SceneRenderKind(JobKind[SceneRenderJob]):
    name = "scene_render"
    spec = SceneRenderJob
    submitted = False

    def items(self, spec: SceneRenderJob, variations: dict[str, list[str]]) -> list[Item]:
        return [Item(i, f.frame_id) for i, f in enumerate(spec.frames)]

    async def check(self, spec: SceneRenderJob, tools: JobTools) -> None:
        """Nothing more to check: the route planned the versions under its client."""

    async def run(self, spec: SceneRenderJob, attempt: Attempt) -> Ended:
        doc, tools = attempt.doc, attempt.tools
        project: Project = await tools.catalog.get_project.remote(doc.client_id, spec.soul_id)

        async def make(index: int) -> dict[str, Any]:
            return await render_frame(tools, doc.client_id, project, spec.frames[index], spec.gate)

        return await made_item_by_item(attempt, [f.frame_id for f in spec.frames], make)

    async def settle(self, spec: SceneRenderJob, doc: JobDoc, tools: JobTools) -> None:
        """Each planned version the job did not make is ``failed`` with why."""
        for index, error in unfinished(doc).items():
            ref = spec.frames[index]
            await tools.catalog.fail_frame.remote(
                doc.client_id, spec.soul_id, ref.frame_id, ref.render_version, error
            )

    def result(self, doc: JobDoc, objects: ObjectStore, ttl_s: int) -> SceneRenderResult | None:
        spec = SceneRenderJob.model_validate(doc.spec)
        frames: list[RenderedFrame | FailedFrame | None] = []
        failed = {f.index: f.error.detail for f in doc.outcome.failed}
        for index, item in enumerate(doc.outcome.items):
            ref = spec.frames[index]
            if item is not None:
                signed = objects.signed_url(item["storage_key"], ttl_s)
                frames.append(RenderedFrame(**item, url=signed.url, expires_at=signed.expires_at))
            elif index in failed or doc.status in ("failed", "cancelled"):
                why = failed.get(index) or (doc.error.detail if doc.error else doc.status)
                frames.append(FailedFrame(**ref.model_dump(), error=why))
            else:
                frames.append(None)
        return SceneRenderResult(project_id=spec.soul_id, scene_id=spec.scene_id, frames=frames)


async def render_frame(
    tools: JobTools, owner: str, project: Project, ref: FrameRef, gate: GateConfig
) -> dict[str, Any]:
    """One planned frame version: rendered with exactly its stored prompt and seed, stored,
    gated, recorded; what the job's item keeps."""
    pid = project.project_id
    version: FrameVersion = await tools.catalog.get_frame_version.remote(
        owner, pid, ref.frame_id, ref.render_version
    )
    scene: Scene
    scene, registry, _ = await tools.catalog.scene_assets.remote(owner, pid, version.scene_id)
    style = project.style.profile(pid)
    job = RenderJob(
        style_id=style_id(style),
        base_model_ref=style.base_model_ref,
        lora_ids=style.lora_ids,
        prompt=version.prompt.prompt,
        negative_prompt=version.prompt.negative_prompt,
        seed=version.seed.seed,
        # each character's identity masked to its region, then the planned placements: each
        # prop's image in its region, further scenery images over the whole frame
        cast=cast(scene.graph, registry) + [p.conditioning() for p in version.placements],
        # the environment's (or nature's) image the frame starts from, as its pipeline says
        reference_key=version.backdrop.image if version.backdrop else None,
        reference_strength=version.backdrop.strength if version.backdrop else None,
        aspect=scene.graph.aspect,  # the frame's shape at the Renderer's area; masks drawn so
    )
    renderer = tools.deliverer.handles.renderer.options(multiplexed_model_id=job.style_id)
    frames: Frames = await renderer.render.remote(job)
    png = png_of(frames)
    key = frame_key(pid, ref.frame_id, ref.render_version)
    await asyncio.to_thread(tools.deliverer.objects.put, key, png)
    checks = await gate_checks(tools, owner, project, version, png, gate)
    recorded: FrameVersion = await tools.catalog.record_frame.remote(
        owner, pid, ref.frame_id, ref.render_version, key, report(checks, gate)
    )
    return {
        "frame_id": ref.frame_id,
        "render_version": ref.render_version,
        "status": recorded.status,
        "seed": version.seed.seed,
        "storage_key": key,
        "consistency_report": recorded.consistency_report,
    }


async def gate_checks(
    tools: JobTools,
    owner: str,
    project: Project,
    version: FrameVersion,
    png: bytes,
    config: GateConfig,
) -> list[Check]:
    """Every check of the gate over one rendered frame (``stories/gate.py``)."""
    scene: Scene
    scene, registry, style = await tools.catalog.scene_assets.remote(
        owner, project.project_id, version.scene_id
    )
    checks = await cast_checks(tools, scene, registry, png, config)
    style_verdict = None
    if project.style_anchor_images:
        style_verdict = await style_judged(tools, project.style_anchor_images, png, config)
    checks.append(style_check(style_verdict, config))
    checks += await asset_checks(tools, owner, scene, registry, png, config)
    try:
        compiled = render_prompt(scene.graph, registry, style)
        same = compiled == version.prompt and scene.graph.graph_hash == version.graph_hash
        detail = "" if same else "the stored prompt or graph differs from the scene's now"
    except ServiceError as exc:
        same, detail = False, str(exc)
    checks.append(Check(check="prompt", passed=same, detail=detail))
    seed = version.seed
    rule = follows_inheritance(seed) and (seed.scene_id, seed.frame_index) == (
        version.scene_id,
        version.frame_index,
    )
    checks.append(Check(check="seed", passed=rule, detail=f"seed {seed.seed} by {seed.rule}"))
    return checks


async def cast_checks(
    tools: JobTools,
    scene: Scene,
    registry: Mapping[str, PinnedAsset],
    png: bytes,
    config: GateConfig,
) -> list[Check]:
    """Each character of the scene's cast judged on its own face in the frame: Dedupe assigns
    the frame's faces to the cast (``IdentityScorer.judge_cast``), so two characters are never
    verified by one face; a character without a reference image is unscorable."""
    pins = scene.graph.characters
    assets = [registry.get(pin.pin or "") for pin in pins]
    keys = [[asset.reference] if asset and asset.reference else [] for asset in assets]
    anchored = [i for i, k in enumerate(keys) if k]
    cast = [await anchors_of(tools, keys[i], cached=True) for i in anchored]
    thresholds = IdentityThresholds(face=config.face, image=config.image)
    judged: list[Verdict] = (
        await tools.deliverer.handles.dedupe.judge_cast.remote(png, cast, thresholds)
        if cast
        else []
    )
    verdicts = dict(zip(anchored, judged, strict=True))
    no_reference = Verdict(verdict="unscorable", reason="no reference image to anchor it")
    return [
        identity_check(pin.asset_id, pin.name, verdicts.get(i, no_reference), config)
        for i, pin in enumerate(pins)
    ]


async def asset_checks(
    tools: JobTools,
    owner: str,
    scene: Scene,
    registry: Mapping[str, PinnedAsset],
    png: bytes,
    config: GateConfig,
) -> list[Check]:
    """Each environment, nature and prop of the scene with a locked image against the frame by
    image embedding (Dedupe's model): the version's embeddings kept in ``asset_image_embed``,
    else its image's, computed now (an image recorded before embeddings were kept)."""
    scenery = scene.graph.assets[len(scene.graph.characters) :]  # environment, nature, props
    pins = [(pin, image) for pin in scenery if (image := image_of(pin, registry))]
    dedupe = tools.deliverer.handles.dedupe
    frame = await image_embedding(dedupe, frames_of(png)) if pins else None
    if frame is None:
        return [asset_check(pin, None, config) for pin, _ in pins]
    model, embedded = frame
    checks = []
    for pin, image in pins:
        kept: list[bytes] = await tools.catalog.asset_image_embeds.remote(
            owner, scene.project_id, pin.asset_id, pin.version, model
        )
        if not kept:  # its image was recorded before images were embedded
            picture = await asyncio.to_thread(tools.deliverer.objects.get, image)
            computed = await image_embedding(dedupe, frames_of(picture))
            kept = [computed[1]] if computed else []
        checks.append(asset_check(pin, (model, drift(embedded, kept)) if kept else None, config))
    return checks


async def style_judged(tools: JobTools, keys: list[str], png: bytes, config: GateConfig) -> Verdict:
    """The frame against the style anchors (the images at ``keys``) by image embedding only."""
    anchors = await anchors_of(tools, keys, cached=False)
    by_image = IdentityAnchors(image_anchor=anchors.image_anchor, models=anchors.models)
    thresholds = IdentityThresholds(image=config.style)
    verdict: Verdict = await tools.deliverer.handles.dedupe.judge_identity.remote(
        png, by_image, thresholds
    )
    return verdict


async def anchors_of(tools: JobTools, keys: list[str], cached: bool) -> IdentityAnchors:
    """The anchors of the images at ``keys`` (``cached``: kept per replica by the images'
    SHA-256, so a scene's frames compute each character's anchors once)."""
    images = [await asyncio.to_thread(tools.deliverer.objects.get, k) for k in keys]
    digest = tuple(hashlib.sha256(image).hexdigest() for image in images)
    if cached and digest in ANCHORS:
        return ANCHORS[digest]
    anchors: IdentityAnchors = await tools.deliverer.handles.dedupe.identity_anchors.remote(images)
    if cached:
        ANCHORS[digest] = anchors
        while len(ANCHORS) > MAX_ANCHORS:
            ANCHORS.pop(next(iter(ANCHORS)))
    return anchors
