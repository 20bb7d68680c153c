"""The catalog and object reads that several delivery steps share: a soul's style, the
references it renders from, and who of a key's users still lacks an unseen variant."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from serve_app.errors import NoStyle, UnknownSoul
from serve_app.references import reference_prefix
from serve_app.schemas import PromptKey, StyleProfile
from serve_app.storage.objects import ObjectStore


async def style_of(catalog: Any, soul_id: str) -> StyleProfile:
    """The soul's style; an unknown soul is a 404, one without a style a 409."""
    style: StyleProfile | None = await catalog.get_style.remote(soul_id)
    if style is not None:
        return style
    if await catalog.get_soul.remote(soul_id) is None:
        raise UnknownSoul(soul_id)
    raise NoStyle(soul_id)


async def style_references(objects: ObjectStore, style: StyleProfile) -> list[str]:
    """The soul's reference keys when its style renders from them, else none."""
    if style.reference_strength is None:
        return []
    return await asyncio.to_thread(objects.list, reference_prefix(style.soul_id))


async def users_lacking(
    catalog: Any, key: PromptKey, users: Iterable[str], identity: int | None = None
) -> list[str]:
    """Of ``users``, those who have seen every variant of the key made with identity version
    ``identity`` (None: without one): only they need a new one."""
    lacking: list[str] = await catalog.users_lacking_unseen.remote(
        key.pk_id, sorted(users), identity
    )
    return lacking
