"""Ingress: the HTTP API (FastAPI through ``@serve.ingress``). Each route translates HTTP into a
call of the ``Deliverer`` (images, selfies) or of ``Looks`` (styles, references) and back;
domain errors become HTTP answers in one table (``serve_app/api/errors.py``)."""
# No `from __future__ import annotations`: FastAPI must resolve route signatures at runtime.

import asyncio
import datetime as dt
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import Body, Path, Query, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    StreamingResponse,
)
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.api.answers import (
    image_answer,
    media_file,
    reference_answer,
    seen_answer,
    shot_answer,
    variant_answer,
)
from serve_app.api.app import STUDIO, create_api
from serve_app.api.deps import AdminOnly, Authorized, IdempotencyKey, client_scope
from serve_app.api.errors import request_id_of, responses
from serve_app.api.idempotency import IdempotencyConfig, Replays
from serve_app.api.info import service_info
from serve_app.api.jobs import JobDesk, JobQueueConfig, Spec
from serve_app.api.models import (
    AnimateRequest,
    CancelAnswer,
    ImageResponse,
    InfoView,
    IngestedReference,
    JobAccepted,
    JobPage,
    JobView,
    KeyDeleted,
    KeyPage,
    KeyView,
    Reference,
    ReferenceRequest,
    RegenerateRequest,
    SeenPage,
    SelfieRequest,
    SelfieResponse,
    StyleIn,
    VariantView,
)
from serve_app.api.openapi import with_formats
from serve_app.delivery import Deliverer, Delivery, DeliveryConfig, Handles, Shot, tenant_user
from serve_app.delivery.places import load_places
from serve_app.diffusion.sources import model_manager
from serve_app.errors import NotFound
from serve_app.jobs.book import Status
from serve_app.jobs.spec import MAX_PACK, JobSpec, RebuildKeysJob, load_variations
from serve_app.looks import Looks, StoredReference
from serve_app.metrics import count
from serve_app.schemas import (
    MAX_CUE_CHARS,
    CostReport,
    Day,
    MediaFormat,
    Regeneration,
    SoulId,
    StyleProfile,
    Text,
    UserId,
    Variant,
)
from serve_app.settings import Settings
from serve_app.storage.objects import open_object_store

ULID_PATTERN = r"^[0-9A-HJKMNP-TV-Z]{26}$"
JobId = Annotated[str, Path(pattern=ULID_PATTERN, description="A job id (ULID).")]
JobKind = Literal["image", "selfie", "pack"]
PkId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}:[0-9a-f]{40}$")]
VariantId = Annotated[str, Path(pattern=ULID_PATTERN, description="A variant id (ULID).")]


class IngressConfig(DeliveryConfig, IdempotencyConfig, JobQueueConfig):
    """The Ingress's live config (``AppArgs.ingress``): delivery, Idempotency-Key and job knobs."""


api = create_api()
log = logging.getLogger("ray.serve")


# Module-level names the class uses must come before it: @serve.ingress copies the class
# (cloudpickle) when it is defined, with only the globals that exist by then.
def delivered(route: str, response: Response, delivery: Delivery) -> None:
    """Count the cache result (a replay is not a lookup) and log what went out; Serve adds the
    request id (the X-Request-ID response header) and the route to the record."""
    replayed = response.headers.get("Idempotent-Replayed") == "true"
    variant = delivery.variant
    if not replayed:
        count("soul_cache_requests", route=route, soul_id=variant.soul_id, result=delivery.cache)
    fields = {
        "soul_id": variant.soul_id,
        "pk_id": variant.pk_id,
        "variant_id": variant.variant_id,
        "cache": delivery.cache,
        "replayed": replayed,
    }
    # Serve's log formatters write these as fields of their own (JSON keys, or key=value).
    log_extra = {"ray_serve_extra_fields": fields}
    log.info("delivered %s (%s)", variant.variant_id, delivery.cache, extra=log_extra)


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        embedder: DeploymentHandle,
        catalog: DeploymentHandle,
        renderer: DeploymentHandle,
        animator: DeploymentHandle,
        dedupe: DeploymentHandle,
        transcoder: DeploymentHandle,
        landmarks_file: str = "config/landmarks.yaml",
        variations_file: str = "config/variations.yaml",
        worker: DeploymentHandle | None = None,
    ) -> None:
        self.settings = Settings()
        self.objects = open_object_store(self.settings)
        api.state.api_keys = [k.get_secret_value().encode() for k in self.settings.api_keys]
        api.state.admin_keys = [k.get_secret_value().encode() for k in self.settings.admin_keys]
        self.catalog = catalog
        handles = Handles(embedder, catalog, renderer, animator, dedupe, transcoder).by_reference()
        self.deliverer = Deliverer(handles, self.objects, load_places(landmarks_file))
        self.looks = Looks(catalog, self.objects, model_manager(self.settings), self.settings)
        self.replays = Replays(catalog)
        variations = load_variations(variations_file)
        self.jobs = JobDesk(
            self.deliverer, catalog, self.objects, self.settings, variations, worker=worker
        )

    def reconfigure(self, config: dict[str, Any]) -> None:
        cfg = IngressConfig.model_validate(config)
        self.deliverer.config = self.replays.config = self.jobs.config = cfg

    def _signed(self, delivery: Delivery, media_format: MediaFormat) -> ImageResponse:
        return image_answer(self.objects, self.settings.media_url_ttl_s, delivery, media_format)

    async def _delivered_once(
        self,
        request: Request,
        response: Response,
        route: str,
        idempotency_key: str | None,
        params: dict[str, Any],
        deliver: Callable[[], Awaitable[Delivery]],
        media_format: MediaFormat = "gif",
    ) -> ImageResponse:
        """``deliver`` once per Idempotency-Key (a retry replays what it delivered), then the
        answer with its URLs signed now, counted and logged under ``route``."""

        async def recorded() -> dict[str, Any]:
            return (await deliver()).model_dump(mode="json")

        result = await self.replays.once(request, response, idempotency_key, params, recorded)
        delivery = Delivery.model_validate(result)
        answer = await asyncio.to_thread(self._signed, delivery, media_format)
        delivered(route, response, delivery)
        return answer

    async def _thumbnailed(self, variants: list[Variant]) -> list[Variant]:
        return list(await asyncio.gather(*map(self.deliverer.thumbnailed, variants)))

    def _reference(self, soul_id: str, storage_key: str) -> Reference:
        return reference_answer(self.objects, self.settings.media_url_ttl_s, soul_id, storage_key)

    # ---- the studio -----------------------------------------------------------------------
    @api.get("/", include_in_schema=False)
    async def home(self) -> RedirectResponse:
        return RedirectResponse("/studio")

    @api.get("/studio", tags=["studio"], response_class=FileResponse, responses=responses())
    async def studio(self) -> FileResponse:
        """The web page for people: generate, selfies, packs, the queue, styles, the catalog."""
        return FileResponse(STUDIO / "index.html", headers={"Cache-Control": "no-cache"})

    # ---- health -------------------------------------------------------------------------
    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self) -> JSONResponse:
        return JSONResponse(with_formats(api.openapi(), await self.deliverer.formats()))

    @api.get("/docs", include_in_schema=False)
    async def docs(self) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=api.title)

    @api.get("/healthz", tags=["health"], responses=responses())
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get(
        "/info",
        response_model=InfoView,
        tags=["health"],
        dependencies=[Authorized],
        responses=responses(401, 503),
    )
    async def info(self) -> InfoView:
        """Version, the graph's deployments and their running replicas, the models the souls'
        styles render with, the formats new variants get, and which backends are in use (by
        name: never a URL or a secret)."""
        status = await asyncio.to_thread(serve.status)
        styles = await self.looks.list_styles()
        formats = await self.deliverer.formats()
        objects = self.objects.backend
        return service_info(status, styles, formats, self.settings, objects)

    @api.get("/ready", tags=["health"], responses=responses(503))
    async def ready(self, request: Request) -> JSONResponse:
        """200 when the catalog store and the object store answer; else 503, saying which not
        (an error body with the request id, plus the checks)."""
        checks: dict[str, str] = {}
        try:
            await self.catalog.ping.remote()
            checks["catalog"] = "ok"
        except Exception as exc:
            checks["catalog"] = f"unavailable: {type(exc).__name__}"
        try:
            await asyncio.to_thread(self.objects.ping)
            checks["objects"] = "ok"
        except Exception as exc:
            checks["objects"] = f"unavailable: {exc}"
        failing = [name for name, state in checks.items() if state != "ok"]
        if not failing:
            return JSONResponse({"ready": True, "checks": checks})
        detail = f"not ready: {', '.join(failing)} unavailable; retry shortly"
        body = {"detail": detail, "request_id": request_id_of(request), "ready": False}
        return JSONResponse({**body, "checks": checks}, status_code=503)

    # ---- images -------------------------------------------------------------------------
    @api.get(
        "/image",
        response_model=ImageResponse,
        tags=["images"],
        dependencies=[Authorized],
        responses=responses(401, 404, 409, 413, 422, 502, 503),
    )
    async def image(
        self,
        request: Request,
        response: Response,
        soul_id: Annotated[SoulId, Query(description="Soul, e.g. nova.")],
        cue: Annotated[
            Text,
            Query(
                max_length=MAX_CUE_CHARS,
                description="What to draw: at least one word besides punctuation and stopwords.",
            ),
        ],
        user_id: Annotated[UserId, Query(description="Who receives it.")],
        media_format: Annotated[
            MediaFormat,
            Query(
                alias="format",
                description="Format of ``url``: gif always; webp and mp4 only where the service "
                "encodes them (transcoder.formats), else 422.",
            ),
        ] = "gif",
        idempotency_key: IdempotencyKey = None,
    ) -> ImageResponse:
        """An animation of ``cue`` in the soul's style that this user has never been sent."""
        await self.deliverer.check_image(cue, media_format)
        params = {"soul_id": soul_id, "cue": cue, "user_id": user_id}
        user = tenant_user(client_scope(request), user_id)

        async def deliver() -> Delivery:
            return await self.deliverer.image(soul_id, cue, user)

        once = (idempotency_key, params, deliver)
        return await self._delivered_once(request, response, "/image", *once, media_format)

    # ---- selfies ------------------------------------------------------------------------
    @api.get("/cities", tags=["selfies"], dependencies=[Authorized], responses=responses(401))
    async def cities(self) -> dict[str, Any]:
        """Cities with their landmarks, and the moods and camera angles a selfie can have."""
        places = self.deliverer.places
        return {
            "cities": [
                {"city_key": key, "display_name": c.display_name, "landmarks": list(c.landmarks)}
                for key, c in places.cities.items()
            ],
            "moods": list(places.moods),
            "angles": list(places.angles),
        }

    @api.post(
        "/selfie",
        response_model=SelfieResponse,
        tags=["selfies"],
        dependencies=[Authorized],
        responses=responses(401, 404, 409, 413, 422, 502, 503),
    )
    async def selfie(
        self,
        request: Request,
        response: Response,
        body: SelfieRequest,
        idempotency_key: IdempotencyKey = None,
    ) -> SelfieResponse:
        """The soul at a landmark of the city this user has not had (else the least recently
        used one, from a new angle), in their style and mood."""
        self.deliverer.check_place(body.city_key, body.mood)

        async def shoot() -> dict[str, Any]:
            user = tenant_user(client_scope(request), body.user_id)
            shot = await self.deliverer.selfie(body.soul_id, body.city_key, body.mood, user)
            return shot.model_dump(mode="json")

        params = body.model_dump(mode="json")
        shot = Shot.model_validate(
            await self.replays.once(request, response, idempotency_key, params, shoot)
        )
        ttl_s = self.settings.media_url_ttl_s
        answer = await asyncio.to_thread(shot_answer, self.objects, ttl_s, shot)
        delivered("/selfie", response, shot)
        return answer

    # ---- media --------------------------------------------------------------------------
    @api.get("/media/{storage_key:path}", tags=["media"], responses=responses(403, 404, 422))
    async def media(
        self,
        storage_key: str,
        exp: Annotated[int, Query()],
        sig: Annotated[str, Query(max_length=100)],
    ) -> FileResponse:
        """An object of the local store, only with a valid, unexpired signature."""
        path = media_file(self.objects, storage_key, exp, sig)
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(
            path, media_type=media_type, headers={"Cache-Control": "private, max-age=300"}
        )

    # ---- styles -------------------------------------------------------------------------
    @api.post(
        "/style",
        response_model=StyleProfile,
        tags=["styles"],
        dependencies=[Authorized],
        responses=responses(401, 404, 409, 413, 422, 502, 503),
    )
    async def put_style(
        self,
        request: Request,
        response: Response,
        style: StyleIn,
        idempotency_key: IdempotencyKey = None,
    ) -> StyleProfile:
        """Upsert a soul's style profile (last write wins)."""
        params = style.model_dump(mode="json")

        async def upsert() -> dict[str, Any]:
            stored = await self.looks.put_style(StyleProfile.model_validate(params))
            return stored.model_dump(mode="json")

        return StyleProfile.model_validate(
            await self.replays.once(request, response, idempotency_key, params, upsert)
        )

    @api.get(
        "/style",
        response_model=list[StyleProfile],
        tags=["styles"],
        dependencies=[Authorized],
        responses=responses(401, 503),
    )
    async def list_styles(self) -> list[StyleProfile]:
        return await self.looks.list_styles()

    @api.get(
        "/style/{soul_id}",
        response_model=StyleProfile,
        tags=["styles"],
        dependencies=[Authorized],
        responses=responses(401, 404, 422, 503),
    )
    async def get_style(self, soul_id: SoulId) -> StyleProfile:
        return await self.looks.get_style(soul_id)

    @api.delete(
        "/style/{soul_id}",
        status_code=204,
        tags=["styles"],
        dependencies=[Authorized],
        responses=responses(401, 404, 409, 422, 503),
    )
    async def delete_style(
        self,
        request: Request,
        response: Response,
        soul_id: SoulId,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        async def delete() -> dict[str, Any]:
            await self.looks.delete_style(soul_id)
            return {}

        await self.replays.once(request, response, idempotency_key, {"soul_id": soul_id}, delete)
        return Response(status_code=204, headers=response.headers)

    # ---- reference images --------------------------------------------------------------
    @api.post(
        "/ingest/reference",
        response_model=IngestedReference,
        tags=["references"],
        dependencies=[Authorized],
        responses=responses(401, 403, 404, 409, 413, 422, 502, 503),
    )
    async def ingest_reference(
        self,
        request: Request,
        response: Response,
        body: ReferenceRequest,
        idempotency_key: IdempotencyKey = None,
    ) -> IngestedReference:
        """Fetch an image for a soul, verify it and store it as a plain RGB PNG."""

        async def ingest() -> dict[str, Any]:
            stored = await self.looks.ingest_reference(body.soul_id, body.url)
            return stored.model_dump(mode="json")

        params = body.model_dump(mode="json")
        result = await self.replays.once(request, response, idempotency_key, params, ingest)
        stored = StoredReference.model_validate(result)
        reference = await asyncio.to_thread(self._reference, body.soul_id, stored.storage_key)
        return IngestedReference.model_validate({**stored.model_dump(), **reference.model_dump()})

    @api.get(
        "/ingest/reference/{soul_id}",
        response_model=list[Reference],
        tags=["references"],
        dependencies=[Authorized],
        responses=responses(401, 404, 422, 503),
    )
    async def list_references(self, soul_id: SoulId) -> list[Reference]:
        """A soul's reference images, oldest first, with signed URLs."""
        keys = await self.looks.reference_keys(soul_id)
        return await asyncio.to_thread(lambda: [self._reference(soul_id, k) for k in keys])

    # ---- jobs ---------------------------------------------------------------------------
    @api.post(
        "/jobs",
        status_code=202,
        response_model=JobAccepted,
        tags=["jobs"],
        dependencies=[Authorized],
        responses=responses(401, 404, 409, 413, 422, 429, 503),
    )
    async def submit_job(
        self,
        request: Request,
        response: Response,
        spec: Annotated[JobSpec, Body()],
        idempotency_key: IdempotencyKey = None,
    ) -> JobAccepted:
        """Queue an image, a selfie or a pack (2-10 images) for this client; 202 with the job
        id, its place in the queue and an estimate. Watch it at ``links.events``."""
        return await self._queue(request, response, spec, idempotency_key)

    @api.post(
        "/admin/rebuild_prompt_key",
        status_code=202,
        response_model=JobAccepted,
        tags=["admin"],
        dependencies=[AdminOnly],
        responses=responses(401, 403, 404, 409, 422, 429, 503),
    )
    async def rebuild_prompt_key(
        self,
        request: Request,
        response: Response,
        spec: Annotated[RebuildKeysJob, Body()],
        idempotency_key: IdempotencyKey = None,
    ) -> JobAccepted:
        """Normalize and embed the soul's prompt keys anew (after a change of the embedder or
        of the embedded text), as a job of this admin key: 202 with its id; its progress counts
        keys. Keys and their variants keep their ids, and every Catalog replica swaps its
        rebuilt index in without a pause in serving."""
        return await self._queue(request, response, spec, idempotency_key)

    async def _queue(
        self,
        request: Request,
        response: Response,
        spec: Spec,
        idempotency_key: str | None,
    ) -> JobAccepted:
        await self.jobs.check(spec)
        client_id = client_scope(request)

        async def submit() -> dict[str, Any]:
            return (await self.jobs.submit(client_id, spec)).model_dump(mode="json")

        params = spec.model_dump(mode="json")
        result = await self.replays.once(request, response, idempotency_key, params, submit)
        return JobAccepted.model_validate(result)

    @api.get(
        "/jobs",
        response_model=JobPage,
        tags=["jobs"],
        dependencies=[Authorized],
        responses=responses(401, 422, 503),
    )
    async def list_jobs(
        self,
        request: Request,
        user_id: Annotated[UserId | None, Query()] = None,
        soul_id: Annotated[SoulId | None, Query()] = None,
        status: Annotated[Status | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        after: Annotated[
            str | None, Query(max_length=26, description="next_after of a page.")
        ] = None,
    ) -> JobPage:
        """This client's jobs, newest first, a page at a time."""
        asked = {"user_id": user_id, "soul_id": soul_id, "status": status}
        filters = {k: v for k, v in asked.items() if v is not None}
        return await self.jobs.page(client_scope(request), filters, after, limit)

    @api.get("/jobs/stats", tags=["jobs"], dependencies=[Authorized], responses=responses(401, 503))
    async def job_stats(self) -> dict[str, Any]:
        """Queued and running jobs by kind and priority, the oldest queued job's age, wait and
        run time percentiles over a recent window, and the workers alive."""
        return await self.jobs.stats()

    @api.get(
        "/jobs/{job_id}",
        response_model=JobView,
        tags=["jobs"],
        dependencies=[Authorized],
        responses=responses(401, 404, 422, 503),
    )
    async def get_job(self, request: Request, job_id: JobId) -> JobView:
        """The job, its progress, and what it delivered (URLs signed now)."""
        return await self.jobs.view(client_scope(request), job_id)

    @api.post(
        "/jobs/{job_id}/cancel",
        response_model=CancelAnswer,
        tags=["jobs"],
        dependencies=[Authorized],
        responses=responses(401, 404, 422, 503),
    )
    async def cancel_job(self, request: Request, job_id: JobId) -> CancelAnswer:
        """Stop a job: a queued one at once, a running one within a denoising step. Items it
        already delivered stay delivered; nothing half-made becomes visible."""
        return await self.jobs.cancel(client_scope(request), job_id)

    @api.get(
        "/jobs/{job_id}/events",
        tags=["jobs"],
        dependencies=[Authorized],
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events."},
            **responses(401, 404, 422, 503),
        },
    )
    async def job_events(self, request: Request, job_id: JobId) -> StreamingResponse:
        """Server-Sent Events: ``status`` (the job, first), ``progress``, ``item``, ``done``."""
        client_id = client_scope(request)
        await self.jobs.job(client_id, job_id)  # a 404 before the stream starts
        return StreamingResponse(
            self.jobs.events(client_id, job_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @api.get("/estimate", tags=["jobs"], dependencies=[Authorized], responses=responses(401, 422))
    async def estimate(
        self,
        kind: Annotated[JobKind, Query()],
        soul_id: Annotated[SoulId | None, Query()] = None,
        count: Annotated[int, Query(ge=1, le=MAX_PACK)] = 1,
    ) -> dict[str, Any]:
        """Seconds a job submitted now would take, from measured recent run times and the
        queue ahead; ``estimated_s`` is null until a job of the kind has finished."""
        return await self.jobs.estimate(kind, soul_id, count)

    # ---- the catalog, read-only ---------------------------------------------------------
    @api.get(
        "/keys",
        response_model=KeyPage,
        tags=["catalog"],
        dependencies=[Authorized],
        responses=responses(401, 422, 503),
    )
    async def keys(
        self,
        soul_id: Annotated[SoulId, Query()],
        after: Annotated[str, Query(max_length=120, description="next_after of a page.")] = "",
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> KeyPage:
        """A soul's prompt keys in key order, with their normalized text and variant count."""
        page = await self.catalog.keys_page.remote(soul_id, after, limit)
        keys = [KeyView(pk_id=k.pk_id, key_norm=k.key_norm, variants=n) for k, n in page]
        return KeyPage(keys=keys, next_after=keys[-1].pk_id if len(keys) == limit else None)

    @api.get(
        "/keys/{pk_id}/variants",
        response_model=list[VariantView],
        tags=["catalog"],
        dependencies=[Authorized],
        responses=responses(401, 404, 422, 503),
    )
    async def key_variants(self, pk_id: PkId) -> list[VariantView]:
        """A prompt key's variants, oldest first, with signed cover, thumbnail and GIF URLs."""
        if await self.catalog.get_prompt_key.remote(pk_id) is None:
            raise NotFound(f"unknown prompt key {pk_id!r}")
        variants = await self._thumbnailed(await self.catalog.list_variants.remote(pk_id))
        ttl_s = self.settings.media_url_ttl_s
        return await asyncio.to_thread(
            lambda: [variant_answer(self.objects, ttl_s, v) for v in variants]
        )

    @api.delete(
        "/keys/{pk_id}",
        response_model=KeyDeleted,
        tags=["catalog"],
        dependencies=[AdminOnly],
        responses=responses(401, 403, 404, 422, 503),
    )
    async def delete_key(self, pk_id: PkId) -> KeyDeleted:
        """Delete every variant of the key (admin keys only), as ``DELETE /variants/{id}``
        does one; the key stays, and its next request renders anew."""
        deleted = await self.catalog.delete_key_variants.remote(pk_id)
        return KeyDeleted(pk_id=pk_id, deleted=deleted)

    @api.get(
        "/variants/{variant_id}",
        response_model=VariantView,
        tags=["catalog"],
        dependencies=[Authorized],
        responses=responses(401, 404, 410, 422, 503),
    )
    async def get_variant(self, variant_id: VariantId) -> VariantView:
        """A variant with signed cover, thumbnail and GIF URLs; 410 once it was deleted."""
        found = await self.catalog.find_variant.remote(variant_id)
        [variant] = await self._thumbnailed([found])
        ttl_s = self.settings.media_url_ttl_s
        return await asyncio.to_thread(variant_answer, self.objects, ttl_s, variant)

    @api.post(
        "/variants/{variant_id}/regenerate",
        response_model=ImageResponse,
        tags=["catalog"],
        dependencies=[Authorized],
        responses=responses(401, 404, 409, 410, 422, 503),
    )
    async def regenerate(
        self,
        request: Request,
        response: Response,
        variant_id: VariantId,
        body: RegenerateRequest,
        idempotency_key: IdempotencyKey = None,
    ) -> ImageResponse:
        """A new variant of the same key derived from this one (its style and prompt; a new
        seed, extra words, or img2img from its cover at ``strength``), delivered to the user
        as a GIF; 409 past ``ingress.regenerate_limit`` of them per original."""

        async def derive() -> Delivery:
            user = tenant_user(client_scope(request), body.user_id)
            change = Regeneration.model_validate(body.model_dump(exclude={"user_id"}))
            return await self.deliverer.regenerate(variant_id, user, change)

        params = {"variant_id": variant_id, **body.model_dump(mode="json")}
        route = "/variants/{variant_id}/regenerate"
        return await self._delivered_once(request, response, route, idempotency_key, params, derive)

    @api.post(
        "/variants/{variant_id}/animate",
        response_model=ImageResponse,
        tags=["catalog"],
        dependencies=[Authorized],
        responses=responses(401, 404, 409, 410, 422, 503),
    )
    async def animate(
        self,
        request: Request,
        response: Response,
        variant_id: VariantId,
        body: AnimateRequest,
        idempotency_key: IdempotencyKey = None,
    ) -> ImageResponse:
        """A new variant of the same key: this one's cover set in motion in ``mode``,
        delivered to the user as a GIF; it counts towards ``ingress.regenerate_limit``."""

        async def move() -> Delivery:
            user = tenant_user(client_scope(request), body.user_id)
            return await self.deliverer.animate(variant_id, user, body.mode, body.frames)

        params = {"variant_id": variant_id, **body.model_dump(mode="json")}
        route = "/variants/{variant_id}/animate"
        return await self._delivered_once(request, response, route, idempotency_key, params, move)

    @api.delete(
        "/variants/{variant_id}",
        status_code=204,
        tags=["catalog"],
        dependencies=[AdminOnly],
        responses=responses(401, 403, 404, 410, 422, 503),
    )
    async def delete_variant(self, variant_id: VariantId) -> Response:
        """Delete a variant (admin keys only): it is never delivered again, to anyone, and its
        objects are removed; the users who had it keep it in their history (not in
        ``/users/{id}/seen``, which lists what still exists). 410 when it is already gone."""
        await self.catalog.delete_variant.remote(variant_id)
        return Response(status_code=204)

    @api.get(
        "/users/{user_id}/seen",
        response_model=SeenPage,
        tags=["catalog"],
        dependencies=[Authorized],
        responses=responses(401, 422, 503),
    )
    async def seen(
        self,
        request: Request,
        user_id: Annotated[UserId, Path(description="A user of this API client.")],
        after: Annotated[
            str | None, Query(pattern=ULID_PATTERN, description="next_after of a page.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> SeenPage:
        """What this client's user was sent, newest variant first (the order of the history's
        primary key: a variant sent late but made early comes later), with signed URLs."""
        user = tenant_user(client_scope(request), user_id)
        page, next_after = await self.catalog.seen_page.remote(user, after or "", limit)
        variants = await self._thumbnailed([variant for variant, _ in page])
        ttl_s = self.settings.media_url_ttl_s
        seen = await asyncio.to_thread(
            lambda: [
                seen_answer(self.objects, ttl_s, v, ts)
                for v, (_, ts) in zip(variants, page, strict=True)
            ]
        )
        return SeenPage(seen=seen, next_after=next_after)

    @api.get(
        "/stats/cost",
        response_model=CostReport,
        tags=["stats"],
        dependencies=[AdminOnly],
        responses=responses(401, 403, 422, 503),
    )
    async def cost(
        self,
        since: Annotated[
            Day | None, Query(description="First UTC day counted; default: six days ago.")
        ] = None,
    ) -> CostReport:
        """What variants cost (admin keys only): per UTC day and soul, the seconds of their
        render, animation and encode and their price (``catalog.cost``), and today's spend
        against the daily budget."""
        today = dt.datetime.now(dt.UTC).date()
        first = since or today - dt.timedelta(days=6)
        report: CostReport = await self.catalog.cost_report.remote(
            first.isoformat(), today.isoformat()
        )
        return report
