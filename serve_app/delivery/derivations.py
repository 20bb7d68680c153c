"""New variants derived from an existing one: regenerated (its prompt with a change, another
seed, or img2img from its cover) or animated anew (its cover set in motion in another mode).

A derived variant belongs to its original's key, records ``parent_variant_id``, and is
delivered to the user who asked for it (it is new to everyone). At most ``regenerate_limit``
derive from one original, counted under the original's work lock so that concurrent requests
cannot pass the limit either.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
from collections.abc import AsyncIterator
from typing import Any

from serve_app.characters.uses import identity_of, stamped_version
from serve_app.characters.verdicts import Verdict
from serve_app.delivery.checks import with_identity
from serve_app.delivery.config import DeliveryConfig
from serve_app.delivery.locks import WorkLocks
from serve_app.delivery.lookups import style_of
from serve_app.delivery.making import VariantMaker
from serve_app.delivery.order import Answer, Candidate, Judgement, Order, Source
from serve_app.delivery.results import Delivery
from serve_app.errors import Busy, Conflict, NotFound
from serve_app.prompts import render_prompt
from serve_app.schemas import (
    RENDER_FACTS,
    Animation,
    DedupeVerdict,
    Frames,
    PromptKey,
    Regeneration,
    StyleProfile,
    Variant,
)
from serve_app.storage.objects import ObjectStore


class Derivations:
    def __init__(
        self,
        catalog: Any,
        objects: ObjectStore,
        locks: WorkLocks,
        maker: VariantMaker,
        config: DeliveryConfig,
    ) -> None:
        self.catalog = catalog
        self.objects = objects
        self.locks = locks
        self.maker = maker
        self.config = config

    async def regenerate(
        self, variant_id: str, user_id: str, change: Regeneration, via: str = ""
    ) -> Delivery:
        """A new variant of the original's key, derived from it (the soul's style, the
        original's prompt, and ``change``), delivered to the user. Checked by Dedupe for its
        pHash and embedding only: it was asked for, so it is kept even if close to a sibling."""
        async with self._deriving(variant_id, user_id, via, change) as (original, order):
            source = None
            if change.strength is not None:  # img2img from the original's cover
                source = Source(original.meta.get("cover_key"), change.strength)
            order = dataclasses.replace(order, seed=change.seed, source=source)
            made = await self.maker.make(order)
            return _delivered(made, user_id)

    async def animate(
        self,
        variant_id: str,
        user_id: str,
        mode: Animation,
        frames: int | None = None,
        via: str = "",
    ) -> Delivery:
        """A new variant of the original's key: its cover set in motion in ``mode`` (with
        ``frames``, else the Animator's), delivered to the user. Its frames are conditioned on
        the identity version the original was made with (the same face; none for a variant
        made before its soul was locked), and it keeps the original's verdict."""
        deriving = self._deriving(variant_id, user_id, via, Regeneration(), same_identity=True)
        async with deriving as (original, order):
            style = order.style
            if mode == "animated" and not style.motion_module:
                raise Conflict(
                    f'soul {style.soul_id!r} has no motion_module for mode "animated": set one '
                    "with POST /style"
                )
            moving = style.model_copy(update={"extra": {**style.extra, "animation": mode}})
            cover = await self._cover_of(original)
            made = await self.maker.finish(
                dataclasses.replace(order, style=moving, candidate=cover, frames=frames)
            )
            return _delivered(made, user_id)

    @contextlib.asynccontextmanager
    async def _deriving(
        self,
        variant_id: str,
        user_id: str,
        via: str,
        change: Regeneration,
        same_identity: bool = False,
    ) -> AsyncIterator[tuple[Variant, Order]]:
        """The original, and the order of a variant derived from it for the user (the soul's
        style, the original's prompt with ``change``, the key's variants, the soul's latest
        locked identity, or with ``same_identity`` the original's), under the original's lock
        once the limit is checked."""
        original: Variant = await self.catalog.find_variant.remote(variant_id)  # 404, 410
        key: PromptKey | None = await self.catalog.get_prompt_key.remote(original.pk_id)
        if key is None:
            raise NotFound(f"variant {variant_id!r} has no prompt key")
        style = await style_of(self.catalog, original.soul_id)
        async with self.locks.hold(f"derive:{variant_id}"):
            siblings: list[Variant] = await self.catalog.list_variants.remote(key.pk_id)
            made = sum(v.meta.get("parent_variant_id") == variant_id for v in siblings)
            if made >= self.config.regenerate_limit:
                raise Conflict(
                    f"{made} variants derive from {variant_id!r} already, the most "
                    "regenerate_limit allows: derive from one of them instead"
                )
            prompt = _derived_prompt(original, style, key.key_norm, change)
            order = Order(
                key=key,
                style=style,
                cue=key.key_norm,
                prompt=prompt,
                waiting={user_id: via},
                siblings=tuple(siblings),
                parent_variant_id=variant_id,
            )
            if same_identity:
                made_with = stamped_version(original)
                identity = None
                if made_with is not None:
                    identity = await identity_of(self.catalog, key.soul_id, made_with)
            else:
                identity = await identity_of(self.catalog, key.soul_id)
            if identity is not None:
                order = with_identity(order, identity, self.config.identity)
            yield original, order

    async def _cover_of(self, original: Variant) -> Candidate:
        """The original's cover (its render, for "subtle") as the image to set in motion."""
        import numpy as np
        from PIL import Image

        data = await asyncio.to_thread(self.objects.get, original.meta["cover_key"])
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("RGB"))[None]
        render = {k: v for k, v in original.meta.items() if k in RENDER_FACTS}
        fingerprint = DedupeVerdict(
            phash=original.phash or 0,
            min_distance=None,
            duplicate=False,
            image_embed=original.image_embed,
            embed_model=original.fingerprint.embed_model,
        )
        judged: tuple[Judgement, ...] = (Judgement(Answer.PASS, (), found=fingerprint),)
        if "identity_verdict" in original.meta:  # the same render: the same face
            verdict = Verdict.model_validate(original.meta["identity_verdict"])
            judged += (Judgement(Answer.PASS, (), found=verdict),)
        return Candidate(Frames(pixels=pixels, meta=render), original.seed or 0, judged, 0.0)


def _delivered(made: tuple[Variant, list[str]], user_id: str) -> Delivery:
    variant, claimed = made
    if user_id not in claimed:  # the catalog failed the claim after the row
        raise Busy("the new variant could not be claimed for this user; retry")
    return Delivery(variant=variant, cache="miss")


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
