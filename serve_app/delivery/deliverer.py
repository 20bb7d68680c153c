"""User-unique delivery: the Ingress's engine, and what Soul Serve is for.

For a (soul, cue, user): claim a variant of the cue's prompt key that this user has never been
sent; when there is none, render a new one for the users who need it and claim it for them.

    deliver:      claim unseen → else render for the users who need one → claim
    render:       single flight per key in this replica (``Coalescer``), one render of a key at
                  a time across replicas (the ``work_lock`` row), for the users still lacking
    new variant:  render_distinct (render → dedupe best-of) → animate_and_encode → record
                  (the variant row, then its claims; its objects removed on any failure)

A job item's delivery carries ``via`` (``client/job/index``): its claim is marked with it, so a
retried item finds what an earlier attempt delivered (``recover``) instead of delivering twice,
and the stages and denoising steps of its render are reported to it.

The ``Deliverer`` talks to the other deployments only through the handles it is given (Serve's
``DeploymentHandle``s, or plain shims over the engines in unit tests: anything whose
``.method.remote(...)`` returns an awaitable, and that takes such an awaitable as an argument).
It raises domain errors (``serve_app.errors``), never HTTP ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import io
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.delivery.coalesce import Coalescer
from serve_app.diffusion.sources import ModelError
from serve_app.errors import (
    Busy,
    Conflict,
    InvalidRequest,
    NoStyle,
    NotFound,
    UnknownSoul,
    UnusableStyle,
    first_line,
    replica_died,
)
from serve_app.ids import new_ulid
from serve_app.metrics import count
from serve_app.delivery.places import City, Places
from serve_app.prompts import cue_tokens, render_prompt, style_id
from serve_app.references import reference_prefix
from serve_app.schemas import (
    RENDER_FACTS,
    AnimateJob,
    Animation,
    DedupeVerdict,
    EncodedAsset,
    EncodeJob,
    Frames,
    KeyLookup,
    PromptKey,
    Regeneration,
    RenderJob,
    StyleProfile,
    Variant,
    VariantCost,
)
from serve_app.storage.objects import ObjectStore, remove_objects

log = logging.getLogger("ray.serve")


def tenant_user(client_id: str, user_id: str) -> str:
    """A user as the catalog knows them: scoped by the API client that names them, so two
    client apps that both have a user ``u1`` never share a seen history (a user id has no
    ``/``)."""
    return f"{client_id}/{user_id}"


class DeliveryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dedupe_attempts: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Renders tried per new variant before the most distinct one is kept.",
    )
    delivery_attempts: int = Field(
        default=32, ge=1, le=256, description="Render-then-claim rounds before giving up with 503."
    )
    lock_ttl_s: float = Field(
        default=30,
        gt=0,
        description="Lifetime of a key's render lock (work_lock row); renewed every third of it "
        "while the render runs, so a crashed replica's lock frees itself.",
    )
    lock_wait_s: float = Field(
        default=600,
        gt=0,
        description="Longest wait for another replica's render of the same key before a 503.",
    )
    lock_poll_s: float = Field(
        default=0.1, gt=0, le=10, description="How often a waiting request checks the lock."
    )
    replica_ttl_s: float = Field(
        default=5,
        gt=0,
        description="How long this replica's locks outlive it: it says it lives every third of "
        "this, and a lock whose replica went quiet is taken over (instead of after lock_ttl_s).",
    )
    regenerate_limit: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Variants derived from one original (regenerated or animated), at most.",
    )


class Delivery(BaseModel):
    """What was delivered, as kept for an Idempotency-Key replay (URLs are signed afresh)."""

    variant: Variant
    cache: Literal["hit", "miss"]


class Shot(Delivery):
    """A selfie: the variant, and the place it shows."""

    landmark_key: str
    angle: str


class UnknownCity(NotFound):
    def __init__(self, city_key: str, known: list[str]) -> None:
        super().__init__(f"unknown city {city_key!r}; known cities: {', '.join(known)}")


@dataclass(frozen=True)
class Handles:
    """The deployments the Deliverer calls."""

    embedder: Any
    catalog: Any
    renderer: Any
    animator: Any
    dedupe: Any
    transcoder: Any

    @classmethod
    def of_deployments(
        cls, embedder: Any, catalog: Any, renderer: Any, animator: Any, dedupe: Any, transcoder: Any
    ) -> Handles:
        """Serve's handles, the pixels' by reference: frames go from the Renderer and the
        Animator to their takers through Ray's object store, never through this replica, even
        where the node sends handle calls over gRPC (``RAY_SERVE_USE_GRPC_BY_DEFAULT=1``), by
        value and at most 4 MiB a message: 8 frames of 1024² are 24 MiB."""
        pixels = [h.options(_by_reference=True) for h in (renderer, animator, dedupe, transcoder)]
        return cls(embedder, catalog, *pixels)


class OnceMore:
    """A handle to a deployment whose every method is safe to repeat (the Catalog's: reads and
    idempotent writes): a call whose replica died is made once more, on another replica."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __getattr__(self, method: str) -> _Repeated:
        return _Repeated(getattr(self._handle, method), method)


class _Repeated:
    def __init__(self, method: Any, name: str) -> None:
        self._method, self._name = method, name

    async def remote(self, *args: Any) -> Any:
        try:
            return await self._method.remote(*args)
        except Exception as exc:
            if not replica_died(exc):
                raise
            log.warning("a replica died under %s; calling it again", self._name)
            return await self._method.remote(*args)


@dataclass(frozen=True)
class Placement:
    """Where a new variant's objects go: ``<stem>.gif``, ``.png``, ``.json``, ..."""

    variant_id: str
    stem: str


@dataclass(frozen=True)
class Candidate:
    """A render that passed (or best survived) the dedupe check."""

    image: Any  # the Renderer's pending or finished Frames, passed on without a round trip
    verdict: DedupeVerdict
    seed: int
    render_s: float  # of every render made to find it: its variant's render cost


class Deliverer:
    def __init__(
        self,
        handles: Handles,
        objects: ObjectStore,
        places: Places,
        config: DeliveryConfig | None = None,
    ) -> None:
        self.handles = handles
        self.catalog = OnceMore(handles.catalog)
        self.objects = objects
        self.places = places
        self.config = config or DeliveryConfig()
        self.coalescer = Coalescer()
        self.replica_id = new_ulid()  # the owner of this Deliverer's locks
        self._alive: asyncio.Task[None] | None = None

    # ---- what the routes ask for ----------------------------------------------------------
    async def check_image(self, cue: str, media_format: str) -> None:
        """Refuse, before anything is written, a cue with no words or a format not encoded."""
        await self.check_images([cue], media_format)

    async def check_images(self, cues: list[str], media_format: str) -> None:
        """``check_image`` for several cues, asking the Transcoder its formats once."""
        if not all(cue_tokens(cue) for cue in cues):
            raise InvalidRequest(
                "cue: must contain at least one word besides punctuation and stopwords"
            )
        if media_format != "gif" and media_format not in await self.formats():
            raise InvalidRequest(
                f"format: {media_format!r} is not enabled here (transcoder.formats)"
            )

    async def formats(self) -> list[str]:
        """The formats the Transcoder encodes (beside gif, always)."""
        formats: list[str] = await self.handles.transcoder.formats.remote()
        return formats

    def check_place(self, city_key: str, mood: str) -> City:
        """The city of a selfie; refuses an unknown city or mood before anything is written."""
        city = self.places.cities.get(city_key)
        if city is None:
            raise UnknownCity(city_key, list(self.places.cities))
        if mood not in self.places.moods:
            raise InvalidRequest(f"mood: unknown {mood!r}; one of: {', '.join(self.places.moods)}")
        return city

    async def check_soul(self, soul_id: str) -> None:
        """Refuse an unknown soul (404), or one without a style (409)."""
        await self._style(soul_id)

    async def image(self, soul_id: str, cue: str, user_id: str, via: str = "") -> Delivery:
        """A variant of ``cue`` in the soul's style that this user has never been sent."""
        lookup: KeyLookup | None = await self.catalog.lookup.remote(soul_id, cue, user_id, via)
        if lookup is None:
            raise UnknownSoul(soul_id)
        if lookup.style is None:
            raise NoStyle(soul_id)
        key, claimed = lookup.key, lookup.claimed  # an exact key: already claimed in lookup
        if key is None:
            key = await self._similar_key(soul_id, lookup)
            claimed = await self.catalog.claim_unseen.remote(key.pk_id, user_id, via)
        return await self.deliver(key, lookup.style, cue, user_id, claimed, via)

    async def selfie(
        self, soul_id: str, city_key: str, mood: str, user_id: str, via: str = ""
    ) -> Shot:
        """The soul at the next landmark of the city for this user (logged), in their mood."""
        city = self.check_place(city_key, mood)
        style = await self._style(soul_id)
        shot = await self.catalog.choose_shot.remote(
            soul_id, city_key, user_id, list(city.landmarks), list(self.places.angles)
        )
        if shot is None:
            raise Busy("too many concurrent selfies; retry")
        landmark, angle = shot
        key = await self.catalog.ensure_key.remote(
            soul_id, _SELFIE_KEY.format(city=city_key, landmark=landmark, mood=mood, angle=angle)
        )
        scene = ", ".join(
            [
                f"selfie in {city.display_name}",
                city.landmarks[landmark],
                self.places.moods[mood],
                self.places.angles[angle],
            ]
        )
        claimed = await self.catalog.claim_unseen.remote(key.pk_id, user_id, via)
        delivery = await self.deliver(key, style, scene, user_id, claimed, via)
        return Shot(**dict(delivery), landmark_key=landmark, angle=angle)

    async def recover(self, user_id: str, via: str) -> Delivery | None:
        """What an earlier attempt of the job item ``via`` already delivered to the user (a
        selfie as its ``Shot``), or None: the item has yet to be delivered."""
        variant: Variant | None = await self.catalog.claimed_via.remote(user_id, via)
        if variant is None:
            return None
        key: PromptKey | None = await self.catalog.get_prompt_key.remote(variant.pk_id)
        shot = _SELFIE.fullmatch(key.key_norm) if key else None
        variant = await self.thumbnailed(variant)
        if shot is None:
            return Delivery(variant=variant, cache="hit")
        return Shot(
            variant=variant, cache="hit", landmark_key=shot["landmark"], angle=shot["angle"]
        )

    async def regenerate(
        self, variant_id: str, user_id: str, change: Regeneration, via: str = ""
    ) -> Delivery:
        """A new variant of the original's key, derived from it (the soul's style, the
        original's prompt, and ``change``), delivered to the user."""
        async with self._deriving(variant_id) as (original, key, style, siblings):
            prompt = _derived_prompt(original, style, key.key_norm, change)
            candidate = await self._render_derived(style, prompt, original, change, siblings)
            return await self._derived(key, style, prompt, candidate, original, user_id, via)

    async def animate(
        self,
        variant_id: str,
        user_id: str,
        mode: Animation,
        frames: int | None = None,
        via: str = "",
    ) -> Delivery:
        """A new variant of the original's key: its cover set in motion in ``mode`` (with
        ``frames``, else the Animator's), delivered to the user."""
        async with self._deriving(variant_id) as (original, key, style, _):
            if mode == "animated" and not style.motion_module:
                raise Conflict(
                    f'soul {style.soul_id!r} has no motion_module for mode "animated": set one '
                    "with POST /style"
                )
            moving = style.model_copy(update={"extra": {**style.extra, "animation": mode}})
            prompt = _derived_prompt(original, style, key.key_norm, Regeneration())
            candidate = await self._cover_of(original)
            return await self._derived(
                key, moving, prompt, candidate, original, user_id, via, frames
            )

    @contextlib.asynccontextmanager
    async def _deriving(
        self, variant_id: str
    ) -> AsyncIterator[tuple[Variant, PromptKey, StyleProfile, list[Variant]]]:
        """The original, its key, the soul's style and the key's variants, under the
        original's lock: at most ``regenerate_limit`` variants derive from one original,
        counted where concurrent requests cannot pass it either."""
        original: Variant = await self.catalog.find_variant.remote(variant_id)  # 404, 410
        key: PromptKey | None = await self.catalog.get_prompt_key.remote(original.pk_id)
        if key is None:
            raise NotFound(f"variant {variant_id!r} has no prompt key")
        style = await self._style(original.soul_id)
        async with self._work_lock(f"derive:{variant_id}"):
            siblings: list[Variant] = await self.catalog.list_variants.remote(key.pk_id)
            made = sum(v.meta.get("parent_variant_id") == variant_id for v in siblings)
            if made >= self.config.regenerate_limit:
                raise Conflict(
                    f"{made} variants derive from {variant_id!r} already, the most "
                    "regenerate_limit allows: derive from one of them instead"
                )
            yield original, key, style, siblings

    async def _derived(
        self,
        key: PromptKey,
        style: StyleProfile,
        prompt: tuple[str, str],
        candidate: Candidate,
        original: Variant,
        user_id: str,
        via: str,
        frames: int | None = None,
    ) -> Delivery:
        variant, claimed = await self._finish(
            key, style, key.key_norm, prompt, candidate, {user_id: via}, original.variant_id, frames
        )
        if user_id not in claimed:  # the catalog failed the claim after the row
            raise Busy("the new variant could not be claimed for this user; retry")
        return Delivery(variant=variant, cache="miss")

    async def thumbnailed(self, variant: Variant) -> Variant:
        """The variant with its thumbnail: one made before thumbnails gets it now (the
        Transcoder writes it once and finds it from then on)."""
        if "thumbnail_key" in variant.meta:
            return variant
        key: str = await self.handles.transcoder.thumbnail.remote(variant)
        return variant.model_copy(update={"meta": {**variant.meta, "thumbnail_key": key}})

    # ---- delivery -------------------------------------------------------------------------
    async def deliver(
        self,
        key: PromptKey,
        style: StyleProfile,
        cue: str,
        user_id: str,
        claimed: Variant | None,
        via: str = "",
    ) -> Delivery:
        """``claimed`` (a hit), else render-and-claim rounds for this user (a miss)."""
        if claimed is not None:
            return Delivery(variant=await self.thumbnailed(claimed), cache="hit")
        for _ in range(self.config.delivery_attempts):
            variant = await self._render_round(key, style, cue, user_id, via)
            if variant is not None:
                return Delivery(variant=variant, cache="miss")
        raise Busy("too many concurrent requests for this cue; retry")

    async def _render_round(
        self, key: PromptKey, style: StyleProfile, cue: str, user_id: str, via: str
    ) -> Variant | None:
        """Lead or join this replica's render of the key, then take what it made for this user,
        or else claim one another render made meanwhile. None: lost every claim."""
        try:
            rendered, led = await self.coalescer.run(
                key.pk_id, user_id, lambda users: self._render_shared(key, style, cue, users), via
            )
        except ModelError as exc:  # Ray's wrapper is an instance of its cause's class too
            raise UnusableStyle(key.soul_id, first_line(exc)) from exc
        if user_id in rendered:
            if not led:
                count("soul_coalesced_requests", scope="replica")
            return rendered[user_id]
        variant = await self.catalog.claim_unseen.remote(key.pk_id, user_id, via)
        if variant is not None:
            count("soul_coalesced_requests", scope="cluster")
        return variant

    async def _render_shared(
        self, key: PromptKey, style: StyleProfile, cue: str, users: dict[str, str]
    ) -> dict[str, Variant]:
        """One render of a key at a time across replicas, for the users who still need one.

        Under the key's lock, a render happens only if some user has seen every variant (the
        others, say served by the render another replica just finished, claim that). The new
        variant is claimed for the users still waiting when it is recorded who still need it,
        those who joined meanwhile included. Returns who got what.
        """
        async with self._work_lock(f"render:{key.pk_id}"):
            if not await self._lacking(key, set(users)):
                return {}
            try:
                variant, claimed = await self._new_variant(key, style, cue, users)
            except Exception as exc:
                if not replica_died(exc):
                    raise
                # A render, an animation and an encode are safe to repeat: once, elsewhere.
                log.warning("a replica died under a new variant of %s; rendering again", key.pk_id)
                variant, claimed = await self._new_variant(key, style, cue, users)
            return dict.fromkeys(claimed, variant)

    # ---- a new variant --------------------------------------------------------------------
    async def _new_variant(
        self, key: PromptKey, style: StyleProfile, cue: str, waiting: dict[str, str]
    ) -> tuple[Variant, list[str]]:
        """render_distinct → animate_and_encode → record; the variant and who it was claimed
        for (of the users ``waiting`` by then, those who need it)."""
        prompt = render_prompt(style, cue)
        candidate = await self._render_distinct(key, style, prompt, waiting)
        return await self._finish(key, style, cue, prompt, candidate, waiting)

    async def _finish(
        self,
        key: PromptKey,
        style: StyleProfile,
        cue: str,
        prompt: tuple[str, str],
        candidate: Candidate,
        waiting: dict[str, str],
        parent_variant_id: str | None = None,
        frames: int | None = None,
    ) -> tuple[Variant, list[str]]:
        """animate_and_encode → record; the variant and who it was claimed for: of ``waiting``,
        those who need it, or all of them for a variant derived from ``parent_variant_id``
        (it is new to everyone).

        Its objects go if a step before the record fails. Once the record is sent, only the
        catalog knows whether the row was written (its answer can be lost with its replica or
        connection after the commit), so the objects stay: the catalog's sweeper removes them
        if no row names them within ``catalog.orphan_grace_s``."""
        variant_id = new_ulid()
        stem = f"soul/{key.soul_id}/key/{key.key_hash}/variant/{variant_id}"
        try:
            await self._report(waiting, "animate")
            variant = await self._animate_and_encode(
                key, style, cue, prompt, candidate, Placement(variant_id, stem), frames
            )
            await self._report(waiting, "record")
            if parent_variant_id is None:
                claim_for = await self._lacking(key, set(waiting))
            else:
                variant.meta["parent_variant_id"] = parent_variant_id
                claim_for = list(waiting)
        except BaseException:
            await asyncio.to_thread(remove_objects, self.objects, stem)
            raise
        return variant, await self._record(variant, claim_for, waiting)

    async def _render_distinct(
        self, key: PromptKey, style: StyleProfile, prompt: tuple[str, str], waiting: dict[str, str]
    ) -> Candidate:
        """Render with new seeds until one is not a near copy of the key's variants (pHash, and
        CLIP with ``dedupe.clip_model``); after ``dedupe_attempts``, the most distinct render."""
        await self._report(waiting, "render")
        siblings: list[Variant] = await self.catalog.list_variants.remote(key.pk_id)
        known = [v.fingerprint for v in siblings]
        references = await self._style_references(style)
        renderer = self.handles.renderer.options(multiplexed_model_id=style_id(style))
        best: Candidate | None = None
        render_s = 0.0
        for _ in range(self.config.dedupe_attempts):
            seed = secrets.randbits(63)
            reference = references[seed % len(references)] if references else None
            job = _render_job(style, prompt, seed, reference, style.reference_strength, waiting)
            image = renderer.render.remote(job)
            try:
                verdict: DedupeVerdict = await self.handles.dedupe.check.remote(image, known)
            except asyncio.CancelledError:  # a render handed on is not cancelled with its taker
                image.cancel()
                raise
            render_s += verdict.render_s
            if best is None or _distance(verdict) > _distance(best.verdict):
                best = Candidate(image, verdict, seed, 0.0)
            if not verdict.duplicate:
                break
        assert best is not None
        return dataclasses.replace(best, render_s=render_s)

    async def _render_derived(
        self,
        style: StyleProfile,
        prompt: tuple[str, str],
        original: Variant,
        change: Regeneration,
        siblings: list[Variant],
    ) -> Candidate:
        """One render for a regeneration: img2img from the original's cover at
        ``change.strength``, else as the soul's renders go; checked by Dedupe for its pHash and
        embedding only (it was asked for: kept even if close to a sibling)."""
        seed = secrets.randbits(63) if change.seed is None else change.seed
        reference: str | None
        strength: float | None
        if change.strength is not None:
            reference, strength = original.meta.get("cover_key"), change.strength
        else:
            references = await self._style_references(style)
            reference = references[seed % len(references)] if references else None
            strength = style.reference_strength
        job = _render_job(style, prompt, seed, reference, strength, {})
        image = self.handles.renderer.options(multiplexed_model_id=job.style_id).render.remote(job)
        known = [v.fingerprint for v in siblings]
        verdict: DedupeVerdict = await self.handles.dedupe.check.remote(image, known)
        return Candidate(image, verdict, seed, verdict.render_s)

    async def _cover_of(self, original: Variant) -> Candidate:
        """The original's cover (its render, for "subtle") as the image to set in motion."""
        import numpy as np
        from PIL import Image

        data = await asyncio.to_thread(self.objects.get, original.meta["cover_key"])
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("RGB"))[None]
        render = {k: v for k, v in original.meta.items() if k in RENDER_FACTS}
        verdict = DedupeVerdict(
            phash=original.phash or 0,
            min_distance=None,
            duplicate=False,
            image_embed=original.image_embed,
            embed_model=original.fingerprint.embed_model,
        )
        return Candidate(Frames(pixels=pixels, meta=render), verdict, original.seed or 0, 0.0)

    async def _animate_and_encode(
        self,
        key: PromptKey,
        style: StyleProfile,
        cue: str,
        prompt: tuple[str, str],
        candidate: Candidate,
        placement: Placement,
        frames: int | None = None,
    ) -> Variant:
        """Frames from the render (Animator → Transcoder directly), written under the stem."""
        positive, negative = prompt
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
                frames=frames,
            ),
        )
        sidecar = {
            "variant_id": placement.variant_id,
            "pk_id": key.pk_id,
            "soul_id": key.soul_id,
            "key_norm": key.key_norm,
            "cue": cue,
            "phash": candidate.verdict.phash,
        }
        asset: EncodedAsset = await self.handles.transcoder.encode.remote(
            frames, EncodeJob(storage_stem=placement.stem, sidecar=sidecar)
        )
        return Variant(
            variant_id=placement.variant_id,
            pk_id=key.pk_id,
            soul_id=key.soul_id,
            asset_url=asset.asset_url,
            storage_key=asset.gif_key,
            seed=candidate.seed,
            phash=candidate.verdict.phash,
            image_embed=candidate.verdict.image_embed,
            meta={
                **asset.meta,
                "cover_key": asset.cover_key,
                "thumbnail_key": asset.thumbnail_key,
                "sidecar_key": asset.sidecar_key,
                "dedupe_min_distance": candidate.verdict.min_distance,
                "dedupe_clip_distance": candidate.verdict.clip_distance,
                "image_embed_model": candidate.verdict.embed_model,
            },
            cost=VariantCost(
                render_s=candidate.render_s,
                animate_s=asset.meta["animate_s"],
                encode_s=asset.meta["encode_s"],
            ),
        )

    async def _record(
        self, variant: Variant, claim_for: list[str], via: dict[str, str]
    ) -> list[str]:
        """The variant row (single-row LWW write), then a claim for each of ``claim_for``."""
        claimed: list[str] = await self.catalog.put_variant.remote(variant, claim_for, via)
        return claimed

    # ---- helpers --------------------------------------------------------------------------
    async def _report(self, waiting: dict[str, str], stage: str) -> None:
        """Tell the job items among ``waiting`` which stage their render is at."""
        refs = [ref for ref in waiting.values() if ref]
        if refs:
            with contextlib.suppress(Exception):  # progress is advisory; the work goes on
                await self.catalog.job_progress.remote(refs, stage)

    async def _lacking(self, key: PromptKey, users: set[str]) -> list[str]:
        """Of ``users``, those who have seen every variant of the key: only they need a new one."""
        lacking: list[str] = await self.catalog.users_lacking_unseen.remote(
            key.pk_id, sorted(users)
        )
        return lacking

    async def _similar_key(self, soul_id: str, lookup: KeyLookup) -> PromptKey:
        """The nearest key by embedding at or above the similarity threshold, else a new one."""
        embedding = await self.handles.embedder.embed.remote(lookup.cue_text)
        key, _score = await self.catalog.resolve_similar.remote(soul_id, lookup.key_norm, embedding)
        return key

    async def _style(self, soul_id: str) -> StyleProfile:
        style: StyleProfile | None = await self.catalog.get_style.remote(soul_id)
        if style is not None:
            return style
        if await self.catalog.get_soul.remote(soul_id) is None:
            raise UnknownSoul(soul_id)
        raise NoStyle(soul_id)

    async def _style_references(self, style: StyleProfile) -> list[str]:
        """The soul's reference keys when its style renders from them, else none."""
        if style.reference_strength is None:
            return []
        return await asyncio.to_thread(self.objects.list, reference_prefix(style.soul_id))

    @contextlib.asynccontextmanager
    async def _work_lock(self, lock_key: str) -> AsyncIterator[None]:
        """Hold the ``work_lock`` row (waiting while another owner has it), renewed meanwhile."""
        await self._say_alive()
        owner, ttl_ms = f"{self.replica_id}/{new_ulid()}", int(self.config.lock_ttl_s * 1000)
        deadline = time.monotonic() + self.config.lock_wait_s
        while not await self.catalog.try_lock.remote(lock_key, owner, ttl_ms):
            if time.monotonic() > deadline:
                raise Busy("another replica is still rendering this cue; retry", retry_after_s=5)
            await asyncio.sleep(self.config.lock_poll_s)
        renewal = asyncio.create_task(self._renew(lock_key, owner, ttl_ms))
        try:
            yield
        finally:
            renewal.cancel()
            with contextlib.suppress(Exception):  # else it expires after its TTL
                await self.catalog.unlock.remote(lock_key, owner)

    async def _say_alive(self) -> None:
        """From this replica's first lock on, keep saying it lives (a task of no request)."""
        if self._alive is None or self._alive.done():
            ttl_ms = int(self.config.replica_ttl_s * 1000)
            await self.catalog.replica_alive.remote(self.replica_id, ttl_ms)
            self._alive = asyncio.get_running_loop().create_task(
                self._keep_alive(), context=contextvars.Context()
            )

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.config.replica_ttl_s / 3)
            with contextlib.suppress(Exception):  # a missed beat only risks a takeover
                ttl_ms = int(self.config.replica_ttl_s * 1000)
                await self.catalog.replica_alive.remote(self.replica_id, ttl_ms)

    async def _renew(self, lock_key: str, owner: str, ttl_ms: int) -> None:
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            with contextlib.suppress(Exception):  # a missed renewal only risks a duplicate render
                await self.catalog.try_lock.remote(lock_key, owner, ttl_ms)


_SELFIE_KEY = "selfie:{city}:{landmark}:{mood}:{angle}"
_SELFIE = re.compile(r"selfie:(?P<city>\w+):(?P<landmark>\w+):(?P<mood>\w+):(?P<angle>\w+)")


def _render_job(
    style: StyleProfile,
    prompt: tuple[str, str],
    seed: int,
    reference: str | None,
    strength: float | None,
    waiting: dict[str, str],
) -> RenderJob:
    """A render in the soul's style; img2img from ``reference`` at ``strength`` if given."""
    positive, negative = prompt
    return RenderJob(
        style_id=style_id(style),
        base_model_ref=style.base_model_ref,
        lora_ids=style.lora_ids,
        prompt=positive,
        negative_prompt=negative,
        seed=seed,
        reference_key=reference,
        reference_strength=strength if reference else None,
        progress_refs=[ref for ref in waiting.values() if ref],
    )


def _derived_prompt(
    original: Variant, style: StyleProfile, key_norm: str, change: Regeneration
) -> tuple[str, str]:
    """The original's prompt (the key's in the soul's style, where none was recorded), the
    extra words first: CLIP reads 77 tokens, and a soul's prompt may fill them."""
    positive, negative = render_prompt(style, key_norm)
    positive = original.meta.get("prompt", positive)
    negative = original.meta.get("negative_prompt", negative)
    if change.prompt_extra:
        positive = f"{change.prompt_extra}, {positive}"
    return positive, negative


def _distance(verdict: DedupeVerdict) -> tuple[float, int]:
    """How distinct a render is: in image embedding first, where there is one, then in pHash."""
    clip = 2.0 if verdict.clip_distance is None else verdict.clip_distance
    return clip, 64 if verdict.min_distance is None else verdict.min_distance
