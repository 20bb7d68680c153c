"""Making a new variant: render → checks → animate → encode → record.

    render:   the Renderer, with a new seed per attempt (or the one asked for), img2img from
              the order's source or the soul's references
    checks:   each check in turn judges the render; all pass → it is the one; "again" → a new
              render while attempts last; after them (or at "keep best"), the best ranked
    animate:  Animator, handed the render directly (the pixels never come through here)
    encode:   Transcoder, handed the frames directly: the GIF, cover, thumbnail and sidecar
              under the order's stem
    record:   the variant row (single-row LWW write), then its claims: for the waiters who
              still need it, or for all of them when it derives from another variant

Its objects go if a step before the record fails. Once the record is sent, only the catalog
knows whether the row was written (its answer can be lost with its replica or connection
after the commit), so the objects stay: the catalog's sweeper removes them if no row names them
within ``catalog.orphan_grace_s``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Sequence
from typing import Any

from serve_app.characters.uses import counted, version_of
from serve_app.delivery.checks import Check, identity_facts
from serve_app.delivery.handles import Handles
from serve_app.delivery.lookups import style_references, users_lacking
from serve_app.delivery.order import Answer, Candidate, Judgement, Order, Render
from serve_app.delivery.progress import report
from serve_app.prompts import style_id
from serve_app.schemas import AnimateJob, EncodedAsset, EncodeJob, Variant, VariantCost
from serve_app.storage.objects import ObjectStore, remove_objects


class VariantMaker:
    def __init__(
        self, handles: Handles, catalog: Any, objects: ObjectStore, checks: Sequence[Check]
    ) -> None:
        self.handles = handles
        self.catalog = catalog
        self.objects = objects
        self.checks = list(checks)

    async def make(self, order: Order) -> tuple[Variant, list[str]]:
        """The variant, rendered and checked, then finished; and who it was claimed for."""
        await report(self.catalog, order.waiting, "render")
        candidate = await self.render_checked(order)
        return await self.finish(dataclasses.replace(order, candidate=candidate))

    async def render_checked(self, order: Order) -> Candidate:
        """The first render every check passes; else, after ``order.attempts`` (or a check's
        "keep best"), the best ranked of them, charged with every render's seconds."""
        references = (
            [] if order.source is not None else await style_references(self.objects, order.style)
        )
        renderer = self.handles.renderer.options(multiplexed_model_id=style_id(order.style))
        best: tuple[tuple[float, ...], Candidate] | None = None
        render_s = 0.0
        for _ in range(order.attempts):
            render = self._render(renderer, order, references)
            judgements = await self._judge(render, order)
            render_s += max((j.render_s for j in judgements), default=0.0)
            rank = _rank(judgements)  # one that passes every check outranks all before it
            if best is None or rank > best[0]:
                best = (rank, Candidate(render.image, render.seed, judgements, 0.0))
            answers = {j.answer for j in judgements}
            if answers <= {Answer.PASS} or Answer.KEEP_BEST in answers:
                break
        assert best is not None
        return dataclasses.replace(best[1], render_s=render_s)

    async def finish(self, order: Order) -> tuple[Variant, list[str]]:
        """animate → encode → record, for the order's chosen render; the variant and who it was
        claimed for: of the waiters, those who need it, or all of them for a derived variant
        (it is new to everyone)."""
        try:
            await report(self.catalog, order.waiting, "animate")
            variant = await self._animate_and_encode(order)
            await report(self.catalog, order.waiting, "record")
            if order.parent_variant_id is None:
                claim_for = await users_lacking(
                    self.catalog, order.key, order.waiting, version_of(order.identity)
                )
            else:
                variant.meta["parent_variant_id"] = order.parent_variant_id
                claim_for = list(order.waiting)
        except BaseException:
            await asyncio.to_thread(remove_objects, self.objects, order.stem)
            raise
        return variant, await self._record(variant, claim_for, order)

    def _render(self, renderer: Any, order: Order, references: list[str]) -> Render:
        seed = secrets.randbits(63) if order.seed is None else order.seed
        if order.source is not None:
            reference, strength = order.source.reference, order.source.strength
        else:
            reference = references[seed % len(references)] if references else None
            strength = order.style.reference_strength
        job = order.render_job(seed, reference, strength)
        return Render(renderer.render.remote(job), seed)

    async def _judge(self, render: Render, order: Order) -> tuple[Judgement, ...]:
        try:
            judgements: tuple[Judgement, ...] = ()
            for check in self.checks:
                judgements += (await check.judge(render, order, judgements),)
            return judgements
        except asyncio.CancelledError:  # a render handed on is not cancelled with its taker
            render.image.cancel()
            raise

    async def _animate_and_encode(self, order: Order) -> Variant:
        """Frames from the render (Animator → Transcoder directly), written under the stem."""
        positive, negative = order.prompt
        style, candidate = order.style, order.chosen
        frames = self.handles.animator.animate.remote(
            candidate.image,
            AnimateJob(
                base_model_ref=style.base_model_ref,
                lora_ids=style.lora_ids,
                prompt=positive,
                negative_prompt=negative,
                seed=candidate.seed,
                mode=style.animation,
                motion_module=style.motion_module,
                frames=order.frames,
                identity=None if order.identity is None else order.identity.conditioning,
            ),
        )
        sidecar = {
            "variant_id": order.variant_id,
            "pk_id": order.key.pk_id,
            "soul_id": order.key.soul_id,
            "key_norm": order.key.key_norm,
            "cue": order.cue,
            "phash": candidate.fingerprint.phash,
        }
        asset: EncodedAsset = await self.handles.transcoder.encode.remote(
            frames, EncodeJob(storage_stem=order.stem, sidecar=sidecar)
        )
        return _variant(order, asset)

    async def _record(self, variant: Variant, claim_for: list[str], order: Order) -> list[str]:
        """The variant row (single-row LWW write), then a claim for each of ``claim_for``."""
        claimed: list[str] = await self.catalog.put_variant.remote(
            variant, claim_for, order.waiting
        )
        counted(variant)
        return claimed


def _rank(judgements: tuple[Judgement, ...]) -> tuple[float, ...]:
    """Renders that pass more checks first; then by each check's rank, in the checks' order."""
    passed = sum(j.answer is Answer.PASS for j in judgements)
    return (passed, *(r for j in judgements for r in j.rank))


def _variant(order: Order, asset: EncodedAsset) -> Variant:
    """The variant row of the order's chosen render, as the Transcoder stored it."""
    candidate = order.chosen
    fingerprint = candidate.fingerprint
    return Variant(
        variant_id=order.variant_id,
        pk_id=order.key.pk_id,
        soul_id=order.key.soul_id,
        asset_url=asset.asset_url,
        storage_key=asset.gif_key,
        seed=candidate.seed,
        phash=fingerprint.phash,
        image_embed=fingerprint.image_embed,
        meta={
            **asset.meta,
            "cover_key": asset.cover_key,
            "thumbnail_key": asset.thumbnail_key,
            "sidecar_key": asset.sidecar_key,
            "dedupe_min_distance": fingerprint.min_distance,
            "dedupe_clip_distance": fingerprint.clip_distance,
            "image_embed_model": fingerprint.embed_model,
            **({"reserve": True} if order.reserve else {}),
            **identity_facts(order, candidate),
        },
        cost=VariantCost(
            render_s=candidate.render_s,
            animate_s=asset.meta["animate_s"],
            encode_s=asset.meta["encode_s"],
        ),
    )
