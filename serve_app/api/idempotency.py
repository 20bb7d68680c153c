"""The Idempotency-Key protocol: a write runs once per key; its answer is stored and replayed."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel, ConfigDict, Field

from serve_app.api.deps import client_scope
from serve_app.errors import Conflict, InvalidRequest
from serve_app.schemas import IdempotentStart


class IdempotencyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    idempotency_lease_s: float = Field(
        default=900,
        gt=0,
        description="How long a running request owns its Idempotency-Key; past it (a crashed "
        "replica), a retry runs afresh. Keep it above the slowest render.",
    )
    idempotency_retain_s: float = Field(
        default=86_400, gt=0, description="How long a finished response is replayed."
    )


class KeyReused(InvalidRequest):
    def __init__(self) -> None:
        super().__init__("Idempotency-Key: already used with different parameters; use a new key")


class StillRunning(Conflict):
    retry_after_s = 2

    def __init__(self) -> None:
        super().__init__(
            "Idempotency-Key: the first request with this key is still running; retry later"
        )


class Replays:
    """Run a write once per Idempotency-Key (scoped by client, route and parameters): its result
    is stored in the catalog and replayed on retry; a failed first attempt is forgotten."""

    def __init__(self, catalog: Any, config: IdempotencyConfig | None = None) -> None:
        self.catalog = catalog
        self.config = config or IdempotencyConfig()

    async def once(
        self,
        request: Request,
        response: Response,
        idempotency_key: str | None,
        params: dict[str, Any],
        work: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        if idempotency_key is None:
            return await work()
        idem_key = f"{client_scope(request)}:{idempotency_key}"
        route = f"{request.method} {request.url.path}"
        fingerprint = hashlib.sha256(
            json.dumps({"route": route, "params": params}, sort_keys=True).encode()
        ).hexdigest()
        lease_ms = int(self.config.idempotency_lease_s * 1000)
        start: IdempotentStart = await self.catalog.begin_request.remote(
            idem_key, fingerprint, lease_ms
        )
        if start.outcome == "mismatch":
            raise KeyReused()
        if start.outcome == "in_flight":
            raise StillRunning()
        if start.outcome == "replay":
            response.headers["Idempotent-Replayed"] = "true"
            return start.result or {}
        try:
            result = await work()
        except BaseException:
            with contextlib.suppress(Exception):  # else the lease runs out by itself
                await self.catalog.abandon_request.remote(idem_key, start.version)
            raise
        retain_ms = int(self.config.idempotency_retain_s * 1000)
        await self.catalog.finish_request.remote(
            idem_key, fingerprint, start.version, result, retain_ms
        )
        return result
