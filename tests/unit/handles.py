"""Plain stand-ins for Serve's ``DeploymentHandle`` over the real engines, so the ``Deliverer``
runs without Ray: ``handle.method.remote(*args)`` starts the call and returns an awaitable;
an awaitable passed as an argument (another call's response) is awaited first, as Serve
resolves a ``DeploymentResponse`` handed to the next ``.remote()``. Blocking engine methods
run in a thread, as the deployments run them (``asyncio.to_thread``)."""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from typing import Any


class LocalHandle:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls: Counter[str] = Counter()

    def options(self, **_: Any) -> LocalHandle:
        return self  # multiplexing routes between replicas; there is one here

    def __getattr__(self, name: str) -> _Method:
        return _Method(self, name)


class _Method:
    def __init__(self, handle: LocalHandle, name: str) -> None:
        self.handle, self.name = handle, name

    def remote(self, *args: Any, **kwargs: Any) -> asyncio.Task[Any]:
        self.handle.calls[self.name] += 1
        return asyncio.ensure_future(self._call(args, kwargs))

    async def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        resolved = [await a if inspect.isawaitable(a) else a for a in args]
        method = getattr(self.handle.engine, self.name)
        if inspect.iscoroutinefunction(method):
            return await method(*resolved, **kwargs)
        return await asyncio.to_thread(method, *resolved, **kwargs)


class OneText:
    """The Embedder deployment's shape (``@serve.batch``: one text in, one vector out)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def embed(self, text: str) -> list[float]:
        vectors: list[list[float]] = self.engine.embed([text])
        return vectors[0]

    def embed_many(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = self.engine.embed(texts)
        return vectors


class OneUpscale:
    """The Upscaler deployment's shape (``@serve.batch``: one request in, one image out)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def upscale(self, request: tuple[Any, float]) -> Any:
        return self.engine.upscale([request])[0]
