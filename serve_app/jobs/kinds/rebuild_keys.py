"""The ``rebuild_prompt_key`` job: a soul's prompt keys normalized and embedded anew
(``POST /admin/rebuild_prompt_key``, its own route): after a change of the embedder or of the
embedded text, old keys' vectors no longer compare with new cues'.

    pages:  the soul's keys in key order (a primary-key range), a page at a time: each cue
            key's text normalized by today's rules, its cue part embedded, both written back
            on the key's own row; its id and variants stay
    swap:   a marker in the soul's key log; every Catalog replica builds its index anew and
            swaps it in, serving with the old one meanwhile

Keys without an embedding (a selfie's shot, an exact address) are left as they are. Where the
job stands is kept in it after each page, so a retry goes on from there; a page written twice
writes the same rows again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel

from serve_app.api.protocol import KeyRebuildResult
from serve_app.errors import UnknownSoul
from serve_app.jobs.book import JobDoc, Outcome, Progress
from serve_app.jobs.kinds.base import Attempt, Ended, JobKind, JobTools
from serve_app.jobs.spec import Item, JobBase
from serve_app.prompts import cue_part, renormalize
from serve_app.storage.objects import ObjectStore

PAGE = 500
Save = Callable[[Outcome, Progress], Awaitable[None]]


class RebuildKeysJob(JobBase):
    """``POST /admin/rebuild_prompt_key``: the soul's prompt keys normalized and embedded anew
    (after a change of embedder or of the embedded text), keeping their ids and variants."""

    kind: Literal["rebuild_prompt_key"] = "rebuild_prompt_key"


class RebuildState(BaseModel):
    """How far the rebuild went: kept in the job (``Outcome.resume``)."""

    after: str = ""
    total: int = 0
    keys: int = 0
    renormalized: int = 0
    reembedded: int = 0


class KeyRebuild:
    def __init__(self, catalog: Any, embedder: Any) -> None:
        """``embedder.embed_many``: vectors of many texts in one call."""
        self.catalog, self.embedder = catalog, embedder

    async def run(self, doc: JobDoc, spec: RebuildKeysJob, save: Save) -> Outcome:
        """Every page, then the swap; ``save`` keeps where the job stands (it raises when the
        job's lease was lost)."""
        outcome = doc.outcome
        state = RebuildState.model_validate(outcome.resume or {})
        if not state.total:
            state.total = await self.catalog.count_prompt_keys.remote(spec.soul_id)
        while page := await self.catalog.key_texts_page.remote(spec.soul_id, state.after, PAGE):
            await self._rewrite(page, state)
            state.after = page[-1][0]
            state.total = max(state.total, state.keys)  # keys created meanwhile
            outcome.resume = state.model_dump()
            await save(outcome, Progress(done=state.keys, total=state.total, stage="reembed"))
        await save(outcome, Progress(done=state.keys, total=state.total, stage="swap"))
        index = await self.catalog.swap_key_index.remote(spec.soul_id)
        result = state.model_dump(exclude={"after", "total"})
        outcome.items[0] = {"soul_id": spec.soul_id, **result, **index}
        return outcome

    async def _rewrite(self, page: list[tuple[str, str, bool]], state: RebuildState) -> None:
        cue_keys = [
            (pk, key_norm, renormalize(key_norm)) for pk, key_norm, embedded in page if embedded
        ]
        state.keys += len(page)
        if not cue_keys:
            return
        vectors = await self.embedder.embed_many.remote([cue_part(new) for _, _, new in cue_keys])
        rewritten = [
            (pk, new, vector) for (pk, _, new), vector in zip(cue_keys, vectors, strict=True)
        ]
        await self.catalog.rewrite_keys.remote(rewritten)
        state.reembedded += len(cue_keys)
        state.renormalized += sum(1 for _, old, new in cue_keys if old != new)


class RebuildKeysKind(JobKind[RebuildKeysJob]):
    name = "rebuild_prompt_key"
    spec = RebuildKeysJob
    submitted = False

    def items(self, spec: RebuildKeysJob, variations: dict[str, list[str]]) -> list[Item]:
        return [Item(0)]  # its summary

    async def check(self, spec: RebuildKeysJob, tools: JobTools) -> None:
        # A soul without a style still has its keys.
        if await tools.catalog.get_soul.remote(spec.soul_id) is None:
            raise UnknownSoul(spec.soul_id)

    async def units(self, spec: RebuildKeysJob, tools: JobTools) -> int:
        count: int = await tools.catalog.count_prompt_keys.remote(spec.soul_id)
        return count  # its run times are recorded per key

    async def run(self, spec: RebuildKeysJob, attempt: Attempt) -> Ended:
        tools = attempt.tools
        rebuild = KeyRebuild(tools.catalog, tools.deliverer.handles.embedder)
        return Ended("succeeded", await rebuild.run(attempt.doc, spec, attempt.save))

    def result(self, doc: JobDoc, objects: ObjectStore, ttl_s: int) -> KeyRebuildResult | None:
        first = doc.outcome.items[0] if doc.outcome.items else None
        return None if first is None else KeyRebuildResult.model_validate(first)
