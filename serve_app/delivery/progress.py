"""Progress for the job items among a render's waiters (user -> the item's ``via``, "" for a
request): which stage their render is at; the Renderer reports its denoising steps itself."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any


def progress_refs(waiting: Mapping[str, str]) -> list[str]:
    """The job items waiting (requests have no item to report to)."""
    return [ref for ref in waiting.values() if ref]


async def report(catalog: Any, waiting: Mapping[str, str], stage: str) -> None:
    """Tell the job items among ``waiting`` which stage their render is at."""
    refs = progress_refs(waiting)
    if refs:
        with contextlib.suppress(Exception):  # progress is advisory; the work goes on
            await catalog.job_progress.remote(refs, stage)
