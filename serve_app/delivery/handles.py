"""The deployments delivery calls, as one record, and a Catalog handle that survives a replica's
death by calling once more."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from serve_app.errors import replica_died

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class Handles:
    """The deployments the Deliverer (and the print job) call."""

    embedder: Any
    catalog: Any
    renderer: Any
    animator: Any
    dedupe: Any
    transcoder: Any
    upscaler: Any

    def by_reference(self) -> Handles:
        """These handles, the pixels' by reference: frames go from the Renderer and the
        Animator to their takers through Ray's object store, never through this replica, even
        where the node sends handle calls over gRPC (``RAY_SERVE_USE_GRPC_BY_DEFAULT=1``), by
        value and at most 4 MiB a message: 8 frames of 1024² are 24 MiB."""
        pixels = ("renderer", "animator", "dedupe", "transcoder", "upscaler")
        return dataclasses.replace(
            self, **{name: getattr(self, name).options(_by_reference=True) for name in pixels}
        )


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
