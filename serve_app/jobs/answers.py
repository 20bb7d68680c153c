"""A job as its client sees it: the job with what it delivered so far, its URLs signed now
(signing may be a network call: run it off the loop). Its ``result`` is its kind's part."""

from __future__ import annotations

from datetime import UTC, datetime

from serve_app.api.protocol import JobLinks, JobView
from serve_app.jobs.book import JobDoc
from serve_app.jobs.kinds import KINDS
from serve_app.settings import MediaSettings
from serve_app.storage.objects import ObjectStore


def job_links(job_id: str) -> JobLinks:
    return JobLinks(
        self_url=f"/jobs/{job_id}", events=f"/jobs/{job_id}/events", cancel=f"/jobs/{job_id}/cancel"
    )


def job_answer(objects: ObjectStore, media: MediaSettings, doc: JobDoc) -> JobView:
    """The job with what it delivered so far, its URLs signed now."""
    return JobView(
        job_id=doc.job_id,
        kind=doc.kind,
        status=doc.status,
        priority=doc.priority,
        user_id=doc.user_id,
        soul_id=doc.soul_id,
        progress=doc.progress,
        attempts=doc.attempts,
        max_attempts=doc.max_attempts,
        created_at=_at(doc.created_at_ts),
        started_at=_at(doc.started_at_ts),
        finished_at=_at(doc.finished_at_ts),
        result=KINDS[doc.kind].result(doc, objects, media.media_url_ttl_s),
        error=doc.error,
        dead_letter=doc.dead_letter,
        cancel_requested=doc.cancel_requested,
        links=job_links(doc.job_id),
    )


def _at(ts_ms: int | None) -> datetime | None:
    return None if ts_ms is None else datetime.fromtimestamp(ts_ms / 1000, UTC)
