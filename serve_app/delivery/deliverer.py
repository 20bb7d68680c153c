"""User-unique delivery: the Ingress's engine, and what Soul Serve is for.

For a (soul, cue, user): claim a variant of the cue's prompt key that this user has never been
sent; when there is none, render a new one for the users who need it and claim it for them.

    deliver:      claim unseen → else render for the users who need one → claim
    render:       single flight per key in this replica (``Coalescer``), one render of a key at
                  a time across replicas (the ``work_lock`` row, ``locks``), for the users
                  still lacking
    new variant:  render → checks → animate → encode → record (``making``; its objects
                  removed on any failure before the record)

Selfies (``selfies``) and derived variants (``derivations``) are made the same way; a
selfie's key is its shot.

A job item's delivery carries ``via`` (``client/job/index``): its claim is marked with it, so a
retried item finds what an earlier attempt delivered (``recovery``) instead of delivering twice,
and the stages and denoising steps of its render are reported to it (``progress``).

The ``Deliverer`` talks to the other deployments only through the handles it is given (Serve's
``DeploymentHandle``s, or plain shims over the engines in unit tests: anything whose
``.method.remote(...)`` returns an awaitable, and that takes such an awaitable as an argument).
It raises domain errors (``serve_app.errors``), never HTTP ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from serve_app.characters.uses import identity_of, version_of
from serve_app.characters.verdicts import IdentityUse
from serve_app.delivery.checks import Check, DedupeCheck, IdentityCheck, with_identity
from serve_app.delivery.coalesce import Coalescer
from serve_app.delivery.config import DeliveryConfig
from serve_app.delivery.derivations import Derivations
from serve_app.delivery.handles import Handles, OnceMore
from serve_app.delivery.locks import WorkLocks
from serve_app.delivery.lookups import style_of, users_lacking
from serve_app.delivery.making import VariantMaker
from serve_app.delivery.order import Order
from serve_app.delivery.places import City, Places
from serve_app.delivery.recovery import recover
from serve_app.delivery.results import Delivery, Shot
from serve_app.delivery.selfies import Place, Selfies
from serve_app.delivery.thumbnails import thumbnailed
from serve_app.diffusion.sources import ModelError
from serve_app.errors import (
    Busy,
    InvalidRequest,
    NoStyle,
    UnknownSoul,
    UnusableStyle,
    first_line,
    replica_died,
)
from serve_app.metrics import count
from serve_app.prompts import cue_tokens, render_prompt
from serve_app.schemas import Animation, KeyLookup, PromptKey, Regeneration, StyleProfile, Variant
from serve_app.storage.objects import ObjectStore

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class Ask:
    """What a delivery is for: a cue in a soul's style, under the prompt key it resolved to,
    with the identity its renders use (the one a hit was made with too)."""

    key: PromptKey
    style: StyleProfile
    cue: str
    identity: IdentityUse | None = None

    @property
    def flight(self) -> str:
        """What one render serves: the key, under one identity version (requests pinning
        another version wait for a render of their own)."""
        version = version_of(self.identity)
        return self.key.pk_id if version is None else f"{self.key.pk_id}@{version}"


class Deliverer:
    def __init__(
        self,
        handles: Handles,
        objects: ObjectStore,
        places: Places,
        config: DeliveryConfig | None = None,
    ) -> None:
        config = config or DeliveryConfig()
        self.handles = handles
        self.catalog = OnceMore(handles.catalog)
        self.objects = objects
        self.places = places
        self.coalescer = Coalescer()
        self.locks = WorkLocks(self.catalog, config)
        # The checks every new render goes through, in order (identity reads dedupe's finding).
        checks: list[Check] = [
            DedupeCheck(handles.dedupe, lambda: self.config.identity),
            IdentityCheck(),
        ]
        self.maker = VariantMaker(handles, self.catalog, objects, checks)
        self.selfies = Selfies(self.catalog, places)
        self.derivations = Derivations(self.catalog, objects, self.locks, self.maker, config)
        self.config = config

    @property
    def config(self) -> DeliveryConfig:
        return self._config

    @config.setter
    def config(self, config: DeliveryConfig) -> None:
        """Live: ``reconfigure`` sets it, and the parts that read it follow."""
        self._config = self.locks.config = self.derivations.config = config

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
        return self.selfies.check_place(city_key, mood)

    async def check_identity(self, soul_id: str, pinned: int | None) -> None:
        """Refuse, before anything is written, a pinned ``identity_version`` that is not a
        locked version of the soul (422); nothing to check without a pin."""
        if pinned is not None:
            await identity_of(self.catalog, soul_id, pinned)

    async def image(
        self,
        soul_id: str,
        cue: str,
        user_id: str,
        via: str = "",
        identity_version: int | None = None,
    ) -> Delivery:
        """A variant of ``cue`` in the soul's style that this user has never been sent, made
        with the soul's latest locked identity version, or the one pinned."""
        lookup: KeyLookup | None = await self.catalog.lookup.remote(
            soul_id, cue, user_id, via, identity_version
        )
        return await self.looked_up(lookup, soul_id, cue, user_id, via)

    async def looked_up(
        self, lookup: KeyLookup | None, soul_id: str, cue: str, user_id: str, via: str = ""
    ) -> Delivery:
        """``image`` once the catalog's lookup for this user and ``via`` is made (a job's lease
        may have made it): a hit it claimed, else the key's render."""
        if lookup is None:
            raise UnknownSoul(soul_id)
        if lookup.style is None:
            raise NoStyle(soul_id)
        key, claimed = lookup.key, lookup.claimed  # an exact key: already claimed in lookup
        if key is None:
            key = await self._similar_key(soul_id, lookup)
            claimed = await self.catalog.claim_unseen.remote(
                key.pk_id, user_id, via, version_of(lookup.identity)
            )
        ask = Ask(key, lookup.style, cue, lookup.identity)
        return await self.deliver(ask, user_id, claimed, via)

    async def selfie(
        self,
        soul_id: str,
        place: Place,
        user_id: str,
        via: str = "",
        identity_version: int | None = None,
    ) -> Shot:
        """The soul at the next landmark of the place's city for this user (logged), in its
        mood, with the soul's latest locked identity version, or the one pinned."""
        self.selfies.check_place(place.city_key, place.mood)
        style = await style_of(self.catalog, soul_id)
        identity = await identity_of(self.catalog, soul_id, identity_version)
        spot = await self.selfies.choose(soul_id, place.city_key, place.mood, user_id)
        claimed = await self.catalog.claim_unseen.remote(
            spot.key.pk_id, user_id, via, version_of(identity)
        )
        ask = Ask(spot.key, style, spot.scene, identity)
        delivery = await self.deliver(ask, user_id, claimed, via)
        return Shot(**dict(delivery), landmark_key=spot.landmark, angle=spot.angle)

    async def recover(self, user_id: str, via: str) -> Delivery | None:
        """What an earlier attempt of the job item ``via`` already delivered, or None."""
        return await recover(self.catalog, self.handles.transcoder, user_id, via)

    async def regenerate(
        self, variant_id: str, user_id: str, change: Regeneration, via: str = ""
    ) -> Delivery:
        """A new variant derived from ``variant_id`` with ``change``, delivered to the user."""
        return await self.derivations.regenerate(variant_id, user_id, change, via)

    async def animate(
        self,
        variant_id: str,
        user_id: str,
        mode: Animation,
        frames: int | None = None,
        via: str = "",
    ) -> Delivery:
        """A new variant: ``variant_id``'s cover set in motion in ``mode``, for the user."""
        return await self.derivations.animate(variant_id, user_id, mode, frames, via)

    async def thumbnailed(self, variant: Variant) -> Variant:
        """The variant with its thumbnail (made now for one recorded before thumbnails)."""
        return await thumbnailed(self.handles.transcoder, variant)

    # ---- delivery -------------------------------------------------------------------------
    async def deliver(
        self, ask: Ask, user_id: str, claimed: Variant | None, via: str = ""
    ) -> Delivery:
        """``claimed`` (a hit), else render-and-claim rounds for this user (a miss)."""
        if claimed is not None:
            return Delivery(variant=await self.thumbnailed(claimed), cache="hit")
        for _ in range(self.config.delivery_attempts):
            variant = await self._render_round(ask, user_id, via)
            if variant is not None:
                return Delivery(variant=variant, cache="miss")
        raise Busy("too many concurrent requests for this cue; retry")

    async def _render_round(self, ask: Ask, user_id: str, via: str) -> Variant | None:
        """Lead or join this replica's render of the key, then take what it made for this user,
        or else claim one another render made meanwhile. None: lost every claim."""
        key = ask.key
        try:
            rendered, led = await self.coalescer.run(
                ask.flight, user_id, lambda users: self._render_shared(ask, users), via
            )
        except ModelError as exc:  # Ray's wrapper is an instance of its cause's class too
            raise UnusableStyle(key.soul_id, first_line(exc)) from exc
        if user_id in rendered:
            if not led:
                count("soul_coalesced_requests", scope="replica")
            return rendered[user_id]
        variant = await self.catalog.claim_unseen.remote(
            key.pk_id, user_id, via, version_of(ask.identity)
        )
        if variant is not None:
            count("soul_coalesced_requests", scope="cluster")
        return variant

    async def _render_shared(self, ask: Ask, users: dict[str, str]) -> dict[str, Variant]:
        """One render of a key at a time across replicas, for the users who still need one.

        Under the key's lock, a render happens only if some user has seen every variant (the
        others, say served by the render another replica just finished, claim that). The new
        variant is claimed for the users still waiting when it is recorded who still need it,
        those who joined meanwhile included. Returns who got what.
        """
        key = ask.key
        async with self.locks.hold(f"render:{key.pk_id}"):
            if not await users_lacking(self.catalog, key, users, version_of(ask.identity)):
                return {}
            try:
                variant, claimed = await self._new_variant(ask, users)
            except Exception as exc:
                if not replica_died(exc):
                    raise
                # A render, an animation and an encode are safe to repeat: once, elsewhere.
                log.warning("a replica died under a new variant of %s; rendering again", key.pk_id)
                variant, claimed = await self._new_variant(ask, users)
            return dict.fromkeys(claimed, variant)

    async def _new_variant(self, ask: Ask, waiting: dict[str, str]) -> tuple[Variant, list[str]]:
        """A new variant of the key, distinct from its others, and who it was claimed for (of
        the users ``waiting`` by then, those who need it)."""
        siblings: list[Variant] = await self.catalog.list_variants.remote(ask.key.pk_id)
        order = Order(
            key=ask.key,
            style=ask.style,
            cue=ask.cue,
            prompt=render_prompt(ask.style, ask.cue),
            waiting=waiting,
            siblings=tuple(siblings),
            attempts=self.config.dedupe_attempts,
        )
        if ask.identity is not None:
            order = with_identity(order, ask.identity, self.config.identity)
        return await self.maker.make(order)

    async def _similar_key(self, soul_id: str, lookup: KeyLookup) -> PromptKey:
        """The nearest key by embedding at or above the similarity threshold, else a new one."""
        embedding = await self.handles.embedder.embed.remote(lookup.cue_text)
        key, _score = await self.catalog.resolve_similar.remote(soul_id, lookup.key_norm, embedding)
        return key
