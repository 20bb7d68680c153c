"""Jobs: queue an image, a selfie or a pack; list, read, cancel and watch this client's jobs;
the queue's stats and estimates. The logic is the job desk's (``jobs/desk.py``)."""

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query
from fastapi.responses import StreamingResponse

from serve_app.api.deps import Authorized, ClientScope
from serve_app.api.errors import responses
from serve_app.api.params import JobId
from serve_app.api.protocol import CancelAnswer, JobAccepted, JobPage, JobView
from serve_app.api.services import IdempotentCall, IngressServices, Once, Services
from serve_app.jobs.book import Status
from serve_app.jobs.kinds import JobSpec
from serve_app.jobs.kinds.pack import MAX_PACK
from serve_app.jobs.spec import JobBase
from serve_app.schemas import SoulId, UserId

JobKind = Literal["image", "selfie", "pack"]

router = APIRouter(tags=["jobs"], dependencies=[Authorized])

EVENTS = "text/event-stream"
STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {EVENTS: {}},
        "description": "With `Accept: text/event-stream`: the job's Server-Sent Events, the "
        "submit's answer first (`accepted`), then as `GET /jobs/{job_id}/events` sends them.",
    }
}
Accept = Annotated[
    str | None,
    Header(description="`text/event-stream`: answer with the job's events instead of JSON."),
]


def event_stream(frames: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        frames, media_type=EVENTS, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


async def queued(
    services: IngressServices, once: IdempotentCall, client_id: str, spec: JobBase
) -> JobAccepted:
    """Check ``spec`` and queue it for this client, once per Idempotency-Key."""
    await services.jobs.check(spec)

    async def submit() -> dict[str, Any]:
        return (await services.jobs.submit(client_id, spec)).model_dump(mode="json")

    return JobAccepted.model_validate(await once(spec.model_dump(mode="json"), submit))


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobAccepted,
    responses={**STREAMED, **responses(401, 404, 409, 413, 422, 429, 503)},
)
async def submit_job(
    spec: Annotated[JobSpec, Body()],
    client_id: ClientScope,
    services: Services,
    once: Once,
    accept: Accept = None,
) -> JobAccepted | StreamingResponse:
    """Queue an image, a selfie or a pack (2-10 images) for this client; 202 with the job
    id, its place in the queue and an estimate. Watch it at ``links.events``, or ask for
    ``text/event-stream`` to get its events as the answer (one request instead of two)."""
    accepted = await queued(services, once, client_id, spec)
    if EVENTS not in (accept or ""):
        return accepted
    return event_stream(services.jobs.followed(client_id, accepted))


async def job_filters(
    user_id: Annotated[UserId | None, Query()] = None,
    soul_id: Annotated[SoulId | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
) -> dict[str, Any]:
    """The filters ``GET /jobs`` was given."""
    asked = {"user_id": user_id, "soul_id": soul_id, "status": status}
    return {k: v for k, v in asked.items() if v is not None}


JobFilters = Annotated[dict[str, Any], Depends(job_filters)]


@router.get("/jobs", response_model=JobPage, responses=responses(401, 422, 503))
async def list_jobs(
    client_id: ClientScope,
    services: Services,
    filters: JobFilters,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=26, description="next_after of a page.")] = None,
) -> JobPage:
    """This client's jobs, newest first, a page at a time."""
    return await services.jobs.page(client_id, filters, after, limit)


@router.get("/jobs/stats", responses=responses(401, 503))
async def job_stats(services: Services) -> dict[str, Any]:
    """Queued and running jobs by kind and priority, the oldest queued job's age, wait and
    run time percentiles over a recent window, and the workers alive."""
    return await services.jobs.stats()


@router.get("/jobs/{job_id}", response_model=JobView, responses=responses(401, 404, 422, 503))
async def get_job(job_id: JobId, client_id: ClientScope, services: Services) -> JobView:
    """The job, its progress, and what it delivered (URLs signed now)."""
    return await services.jobs.view(client_id, job_id)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=CancelAnswer,
    responses=responses(401, 404, 422, 503),
)
async def cancel_job(job_id: JobId, client_id: ClientScope, services: Services) -> CancelAnswer:
    """Stop a job: a queued one at once, a running one within a denoising step. Items it
    already delivered stay delivered; nothing half-made becomes visible."""
    return await services.jobs.cancel(client_id, job_id)


@router.get(
    "/jobs/{job_id}/events",
    responses={
        200: {"content": {EVENTS: {}}, "description": "Server-Sent Events."},
        **responses(401, 404, 422, 503),
    },
)
async def job_events(
    job_id: JobId, client_id: ClientScope, services: Services
) -> StreamingResponse:
    """Server-Sent Events: ``status`` (the job, first), ``progress``, ``item``, ``done``."""
    # an unknown job is a 404 before the stream starts
    return event_stream(await services.jobs.opened_events(client_id, job_id))


@router.get("/estimate", responses=responses(401, 422))
async def estimate(
    services: Services,
    kind: Annotated[JobKind, Query()],
    soul_id: Annotated[SoulId | None, Query()] = None,
    count: Annotated[int, Query(ge=1, le=MAX_PACK)] = 1,
) -> dict[str, Any]:
    """Seconds a job submitted now would take, from measured recent run times and the
    queue ahead; ``estimated_s`` is null until a job of the kind has finished."""
    return await services.jobs.estimate(kind, soul_id, count)
