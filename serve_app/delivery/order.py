"""What travels through every step of making a variant: one frozen ``Order``.

An order is made once per new variant (a retry after a dead replica is a new order, with a new
variant id) and passed from step to step; a step that learns something (the chosen render)
hands on a copy with it (``dataclasses.replace``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from serve_app.characters.verdicts import IdentityUse
from serve_app.delivery.progress import progress_refs
from serve_app.ids import new_ulid
from serve_app.prompts import style_id
from serve_app.schemas import DedupeVerdict, PromptKey, RenderJob, StyleProfile, Variant


@dataclass(frozen=True)
class Source:
    """An img2img source fixed by whoever orders the variant (a regeneration from its
    original's cover), instead of the soul's references."""

    reference: str | None
    strength: float | None


@dataclass(frozen=True)
class Render:
    """One render on its way: the Renderer's pending Frames, passed on without a round trip."""

    image: Any
    seed: int


class Answer(enum.Enum):
    """A check's answer on one render."""

    PASS = "pass"  # as far as this check goes, the render may become the variant
    AGAIN = "again"  # render anew with a new seed while attempts last, then keep the best
    KEEP_BEST = "keep best"  # rendering anew would not help: keep the best render so far


@dataclass(frozen=True)
class Judgement:
    """A check's answer, with ``rank`` to order renders none of which passed (higher is
    better) and what the check learned on the way."""

    answer: Answer
    rank: tuple[float, ...]
    found: Any = None  # what the check learned (Dedupe: the render's fingerprint)
    render_s: float = 0.0  # the render's seconds, where the check waited for its frames


@dataclass(frozen=True)
class Candidate:
    """The render that passed its checks, or the best of those that did not."""

    image: Any
    seed: int
    judgements: tuple[Judgement, ...]
    render_s: float  # of every render made to find it: its variant's render cost

    @property
    def fingerprint(self) -> DedupeVerdict:
        """What Dedupe found of it: its pHash and image embedding, kept with the variant."""
        return next(j.found for j in self.judgements if isinstance(j.found, DedupeVerdict))


@dataclass(frozen=True)
class Order:
    """A new variant of ``key``: what it is rendered from, for whom, and what was made so far.

    ``waiting`` is the render's flight's live map of waiters (user -> job item, "" for a
    request): users join while the work runs, and the record claims it for them too.
    """

    key: PromptKey
    style: StyleProfile
    cue: str
    prompt: tuple[str, str]
    waiting: Mapping[str, str]
    siblings: tuple[Variant, ...] = ()  # the key's variants, to be distinct from
    attempts: int = 1  # renders tried before the best is kept
    seed: int | None = None  # the seed asked for, else a new one each attempt
    source: Source | None = None
    parent_variant_id: str | None = None  # a variant derived from another, new to everyone
    frames: int | None = None  # the animation's frames, else the Animator's
    identity: IdentityUse | None = None  # the soul's locked identity: conditioned and gated on
    candidate: Candidate | None = None
    reserve: bool = False  # a refill: rendered in the background lane, marked in its meta
    variant_id: str = field(default_factory=new_ulid)

    @property
    def stem(self) -> str:
        """Where the variant's objects go: ``<stem>.gif``, ``.png``, ``.json``, ..."""
        return f"soul/{self.key.soul_id}/key/{self.key.key_hash}/variant/{self.variant_id}"

    @property
    def chosen(self) -> Candidate:
        assert self.candidate is not None, "no render was chosen yet"
        return self.candidate

    def render_job(self, seed: int, reference: str | None, strength: float | None) -> RenderJob:
        """A render in the soul's style; img2img from ``reference`` at ``strength`` if given."""
        positive, negative = self.prompt
        return RenderJob(
            style_id=style_id(self.style),
            base_model_ref=self.style.base_model_ref,
            lora_ids=self.style.lora_ids,
            prompt=positive,
            negative_prompt=negative,
            seed=seed,
            reference_key=reference,
            reference_strength=strength if reference else None,
            progress_refs=progress_refs(self.waiting),
            background=self.reserve,
            identity=None if self.identity is None else self.identity.conditioning,
        )
