"""JobWorker: leases queued jobs from the catalog and delivers them with its own ``Deliverer``.

It runs inside Serve, so it scales and restarts with the graph; a replica that dies loses
nothing (its leases run out and another replica takes the jobs), and one that is stopped hands
back what it holds at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from ray import serve

from serve_app.delivery import Deliverer, DeliveryConfig, Handles
from serve_app.delivery.places import load_places
from serve_app.jobs.answers import job_answer
from serve_app.jobs.book import JobDoc
from serve_app.jobs.kinds.pack import load_variations
from serve_app.jobs.runner import JobRunner, JobWorkerConfig
from serve_app.jobs.webhooks import Webhooks
from serve_app.settings import Settings
from serve_app.storage import open_object_store


class WorkerConfig(DeliveryConfig, JobWorkerConfig):
    """The JobWorker's live config: the job knobs, and the same delivery knobs as the Ingress."""


@serve.deployment(name="JobWorker", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=8)
class JobWorker:
    async def __init__(  # type: ignore[misc]  # Serve awaits it
        self,
        handles: Handles,
        landmarks_file: str = "config/landmarks.yaml",
        variations_file: str = "config/variations.yaml",
    ) -> None:
        self.settings = Settings()
        self.objects = open_object_store(self.settings)
        deliverer = Deliverer(handles.by_reference(), self.objects, load_places(landmarks_file))
        self.catalog = handles.catalog
        self.webhooks = Webhooks(self.settings.jobs, self.settings.webhook_key)
        variations = load_variations(variations_file)
        self.runner = JobRunner(deliverer, self.catalog, self._publish, variations)
        self.leaser: asyncio.Task[None] | None = None
        self.heartbeat = asyncio.create_task(self._beat())

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """Async, so Serve runs it on the replica's loop, where the slots run."""
        cfg = WorkerConfig.model_validate(config)
        self.runner.config = cfg
        self.runner.deliverer.config = DeliveryConfig.model_validate(
            cfg.model_dump(include=set(DeliveryConfig.model_fields))
        )
        self.webhooks.attempts = cfg.webhook_attempts
        if self.leaser is None:  # slots follow the config live, never taken away mid-job
            self.leaser = asyncio.create_task(self.runner.run())

    async def _publish(self, doc: JobDoc) -> None:
        answer = await asyncio.to_thread(job_answer, self.objects, self.settings.media, doc)
        body = json.dumps(answer.model_dump(mode="json", by_alias=True), sort_keys=True).encode()
        assert doc.webhook_url is not None
        await self.webhooks.send(doc.webhook_url, body)

    async def _beat(self) -> None:
        """A live worker is a ``work_lock`` row with a TTL (``GET /jobs/stats`` counts them)."""
        while True:
            ttl_ms = int(self.runner.config.lease_s * 1000)
            with contextlib.suppress(Exception):
                await self.catalog.worker_alive.remote(self.runner.owner, ttl_ms)
            await asyncio.sleep(self.runner.config.lease_s / 3)

    async def holding(self) -> list[str]:
        """Ids of the jobs this replica works on now."""
        return list(self.runner.held)

    async def check_health(self) -> None:
        leaser = self.leaser
        if leaser is not None and leaser.done() and not self.runner.stopping.is_set():
            raise RuntimeError(f"the job leaser stopped: {leaser.exception()!r}")

    async def __del__(self) -> None:
        """Stopping: lease nothing more, hand back what is held (within a watch interval)."""
        self.runner.stop()
        if self.leaser is not None:
            await asyncio.wait({self.leaser}, timeout=self.runner.config.lease_s)
        self.heartbeat.cancel()
        with contextlib.suppress(Exception):
            await self.catalog.worker_gone.remote(self.runner.owner)
