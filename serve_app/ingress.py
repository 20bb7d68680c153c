"""HTTP API (FastAPI through ``@serve.ingress``): validation, user-unique delivery, coalescing."""
# No `from __future__ import annotations`: FastAPI must resolve route signatures at runtime.

import asyncio
import contextlib
import hashlib
import json
import logging
import mimetypes
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.store import StoreUnavailable
from serve_app.coalesce import Coalescer
from serve_app.errors import UnusableSource
from serve_app.ids import new_ulid
from serve_app.metrics import count
from serve_app.models import model_manager, parse_lora
from serve_app.objects import LocalObjectStore, open_object_store
from serve_app.places import Key as PlaceKey
from serve_app.places import load_places
from serve_app.prompts import cue_tokens, render_prompt, style_id
from serve_app.references import (
    fetch_reference,
    reference_key,
    reference_prefix,
)
from serve_app.schemas import (
    MAX_CUE_CHARS,
    AnimateJob,
    DedupeVerdict,
    EncodedAsset,
    EncodeJob,
    IdempotentStart,
    ImageResponse,
    IngestedReference,
    KeyLookup,
    MediaFormat,
    PromptKey,
    Reference,
    ReferenceRequest,
    RenderJob,
    SoulId,
    StoredReference,
    StyleProfile,
    Text,
    UserId,
    Variant,
)
from serve_app.settings import Settings

log = logging.getLogger("ray.serve")


class IngressConfig(BaseModel):
    dedupe_attempts: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Renders tried per new variant before the most distinct one is kept.",
    )
    delivery_attempts: int = Field(
        default=32, ge=1, le=256, description="Render-then-claim rounds before giving up with 503."
    )
    lock_ttl_s: float = Field(
        default=30,
        gt=0,
        description="Lifetime of a key's render lock (work_lock row); renewed every third of it "
        "while the render runs, so a crashed replica's lock frees itself.",
    )
    lock_wait_s: float = Field(
        default=600,
        gt=0,
        description="Longest wait for another replica's render of the same key before a 503.",
    )
    lock_poll_s: float = Field(
        default=0.1, gt=0, le=10, description="How often a waiting request checks the lock."
    )
    idempotency_lease_s: float = Field(
        default=900,
        gt=0,
        description="How long a running request owns its Idempotency-Key; past it (a crashed "
        "replica), a retry runs afresh. Keep it above the slowest render.",
    )
    idempotency_retain_s: float = Field(
        default=86_400, gt=0, description="How long a finished response is replayed."
    )


class Delivery(BaseModel):
    """What /image delivered, as kept for an Idempotency-Key replay (URLs are signed afresh)."""

    variant: Variant
    cache: Literal["hit", "miss"]


class Shot(Delivery):
    """What /selfie delivered: the variant, and the place it shows."""

    landmark_key: str
    angle: str


class SelfieRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    soul_id: SoulId
    city_key: PlaceKey = Field(description="A city of GET /cities, e.g. paris.")
    mood: PlaceKey = Field(description="A mood of GET /cities, e.g. happy.")
    user_id: UserId


class SelfieResponse(ImageResponse):
    landmark_key: str
    angle: str


class StyleIn(StyleProfile):
    """Body of POST /style: the store stamps the LWW timestamp."""

    updated_at_ts: int = Field(default=0, exclude=True)


api = FastAPI(
    title="Soul Serve",
    description="User-unique, soul-styled character GIFs with a prompt-similarity cache.",
    version="0.1.0",
)


@api.exception_handler(RequestValidationError)
async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [
        f"{'.'.join(str(p) for p in err['loc'][1:]) or err['loc'][0]}: {err['msg']}"
        for err in exc.errors()
    ]
    # Where and why, never the rejected input itself (it may be huge, or not even JSON: NaN).
    errors = [{k: err[k] for k in ("type", "loc", "msg")} for err in exc.errors()]
    return JSONResponse(
        status_code=422, content={"detail": "; ".join(problems), "errors": jsonable_encoder(errors)}
    )


@api.exception_handler(StarletteHTTPException)
async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI says 400 for a body it can't read
        return JSONResponse(status_code=422, content={"detail": "body: not valid UTF-8 JSON"})
    return await http_exception_handler(request, exc)


@api.exception_handler(StoreUnavailable)
async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
    log.warning("request %s: catalog store unavailable: %s", request_id_of(request), exc)
    return JSONResponse(
        status_code=503,
        content={"detail": "catalog store unavailable; nothing was changed, retry shortly"},
        headers={"Retry-After": "2"},
    )


@api.exception_handler(UnusableSource)
async def unusable_source(request: Request, exc: UnusableSource) -> JSONResponse:
    """Model refs or a reference image that cannot be used: the client's (4xx) or the
    source's (502) fault."""
    return JSONResponse(status_code=exc.status_code, content={"detail": _first_line(exc)})


def _first_line(exc: BaseException) -> str:
    """The exception's own message, without what Ray adds when it crosses replicas."""
    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


@api.exception_handler(Exception)
async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = request_id_of(request)
    log.exception("request %s failed: %s", request_id, type(exc).__name__)
    return JSONResponse(
        status_code=500,
        content={
            "detail": f"internal error ({type(exc).__name__}); nothing was delivered",
            "request_id": request_id,
        },
    )


def request_id_of(request: Request) -> str:
    """Serve's proxy gives every request an id (the client's X-Request-ID if it sent one) and
    returns it as the X-Request-ID response header; errors quote the same id."""
    return request.headers.get("x-request-id", "")


_bearer = HTTPBearer(auto_error=False)


def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    keys: list[bytes] = request.app.state.api_keys
    if not keys:
        return  # open: local development only
    given = (credentials.credentials if credentials else "").encode()
    if not any(secrets.compare_digest(given, key) for key in keys):
        raise HTTPException(
            401, "missing or invalid bearer API key", {"WWW-Authenticate": "Bearer"}
        )


Authorized = Depends(require_api_key)
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Makes the request safe to retry: the first response is replayed.",
    ),
]


def client_scope(request: Request) -> str:
    """Idempotency keys are per client: a hash of the bearer key, never the key itself."""
    auth = request.headers.get("authorization", "")
    return hashlib.sha256(auth.encode()).hexdigest()[:16] if auth else "open"


# Module-level names the class uses must come before it: @serve.ingress copies the class
# (cloudpickle) when it is defined, with only the globals that exist by then.
def _no_style(soul_id: str) -> HTTPException:
    return HTTPException(409, f"soul {soul_id!r} has no style profile: POST /style first")


def _distance(verdict: DedupeVerdict) -> int:
    return 64 if verdict.min_distance is None else verdict.min_distance


def _delivered(route: str, response: Response, delivery: Delivery) -> None:
    """Count the cache result (a replay is not a lookup) and log what went out; Serve adds the
    request id (the X-Request-ID response header) to the record."""
    replayed = response.headers.get("Idempotent-Replayed") == "true"
    variant = delivery.variant
    if not replayed:
        count("soul_cache_requests", route=route, soul_id=variant.soul_id, result=delivery.cache)
    fields = {  # Serve's own fields include the route and the request id
        "soul_id": variant.soul_id,
        "pk_id": variant.pk_id,
        "variant_id": variant.variant_id,
        "cache": delivery.cache,
        "replayed": replayed,
    }
    # Serve's log formatters write these as fields of their own (JSON keys, or key=value).
    extra = {"ray_serve_extra_fields": fields}
    log.info("delivered %s (%s)", variant.variant_id, delivery.cache, extra=extra)


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
    ) -> None:
        self.settings = Settings()
        self.objects = open_object_store(self.settings)
        self.models = model_manager(self.settings)
        self.places = load_places(landmarks_file)
        api.state.api_keys = [k.get_secret_value().encode() for k in self.settings.api_keys]
        self.embedder, self.catalog = embedder, catalog
        self.renderer, self.animator = renderer, animator
        self.dedupe, self.transcoder = dedupe, transcoder
        self.config = IngressConfig()
        self.coalescer = Coalescer()

    def reconfigure(self, config: dict) -> None:
        self.config = IngressConfig.model_validate(config)

    # ---- health -------------------------------------------------------------------------
    @api.get("/healthz", tags=["health"])
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/ready", tags=["health"])
    async def ready(self) -> JSONResponse:
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
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    # ---- images -------------------------------------------------------------------------
    @api.get("/image", response_model=ImageResponse, tags=["images"], dependencies=[Authorized])
    async def image(
        self,
        request: Request,
        response: Response,
        soul_id: Annotated[SoulId, Query(description="Soul, e.g. nova.")],
        cue: Annotated[Text, Query(max_length=MAX_CUE_CHARS, description="What to draw.")],
        user_id: Annotated[UserId, Query(description="Who receives it.")],
        media_format: Annotated[
            MediaFormat, Query(alias="format", description="Format of ``url``: gif, webp or mp4.")
        ] = "gif",
        idempotency_key: IdempotencyKey = None,
    ) -> ImageResponse:
        """An animation of ``cue`` in the soul's style that this user has never been sent."""
        if not cue_tokens(cue):
            raise HTTPException(
                422, "cue: must contain at least one word besides punctuation and stopwords"
            )
        if media_format != "gif" and media_format not in await self.transcoder.formats.remote():
            raise HTTPException(
                422, f"format: {media_format!r} is not enabled here (transcoder.formats)"
            )
        params = {"soul_id": soul_id, "cue": cue, "user_id": user_id}
        result = await self._once(
            request, response, idempotency_key, params, lambda: self._deliver(**params)
        )
        delivery = Delivery.model_validate(result)
        # Signing may be a network call (GCS under workload identity): off the event loop.
        answer = await asyncio.to_thread(
            self._answer, delivery.variant, delivery.cache, media_format
        )
        _delivered("/image", response, delivery)
        return answer

    async def _deliver(self, soul_id: str, cue: str, user_id: str) -> dict[str, Any]:
        lookup: KeyLookup | None = await self.catalog.lookup.remote(soul_id, cue, user_id)
        if lookup is None:
            raise HTTPException(404, f"unknown soul {soul_id!r}")
        if lookup.style is None:
            raise _no_style(soul_id)
        if lookup.key is not None:
            key, variant = lookup.key, lookup.claimed
        else:
            key = await self._resolve_similar(soul_id, lookup)
            variant = await self.catalog.claim_unseen.remote(key.pk_id, user_id)
        return await self._deliver_key(key, lookup.style, cue, user_id, variant)

    async def _deliver_key(
        self,
        key: PromptKey,
        style: StyleProfile,
        cue: str,
        user_id: str,
        claimed: Variant | None,
    ) -> dict[str, Any]:
        """``claimed`` (a hit), else render-and-claim rounds for this user (a miss)."""
        if claimed is not None:
            return Delivery(variant=claimed, cache="hit").model_dump(mode="json")
        for _ in range(self.config.delivery_attempts):
            variant = await self._render_or_share(key, style, cue, user_id)
            if variant is not None:
                return Delivery(variant=variant, cache="miss").model_dump(mode="json")
        raise HTTPException(
            503, "too many concurrent requests for this cue; retry", {"Retry-After": "1"}
        )

    async def _render_or_share(
        self, key: PromptKey, style: StyleProfile, cue: str, user_id: str
    ) -> Variant | None:
        """One round: start (or join) this replica's render of the key, then take what it made
        for this user, or else claim one another render made meanwhile. None: lost every claim.
        """
        started = False

        def render(users: set[str]) -> Awaitable[dict[str, Variant]]:
            nonlocal started
            started = True
            return self._render_shared(key, style, cue, users)

        rendered: dict[str, Variant] = await self.coalescer.run(key.pk_id, user_id, render)
        if user_id in rendered:
            if not started:
                count("soul_coalesced_requests", scope="replica")
            return rendered[user_id]
        variant = await self.catalog.claim_unseen.remote(key.pk_id, user_id)
        if variant is not None:
            count("soul_coalesced_requests", scope="cluster")
        return variant

    async def _resolve_similar(self, soul_id: str, lookup: KeyLookup) -> PromptKey:
        embedding = await self.embedder.embed.remote(lookup.cue_text)
        key, _score = await self.catalog.resolve_similar.remote(soul_id, lookup.key_norm, embedding)
        return key

    async def _render_shared(
        self, key: PromptKey, style: StyleProfile, cue: str, users: set[str]
    ) -> dict[str, Variant]:
        """One render of a key at a time across replicas, for the users who still need one.

        Under the key's lock, users who can already be served (say, by the render another
        replica just finished) are left to claim it; the rest get a new variant claimed for
        them before the lock is released. Returns who got what.
        """
        async with self._work_lock(f"render:{key.pk_id}"):
            needy = await self.catalog.users_lacking_unseen.remote(key.pk_id, sorted(users))
            if not needy:
                return {}
            variant, claimed = await self._render_variant(key, style, cue, needy)
            return dict.fromkeys(claimed, variant)

    @contextlib.asynccontextmanager
    async def _work_lock(self, lock_key: str) -> AsyncIterator[None]:
        """Hold the ``work_lock`` row (waiting while another owner has it), renewed meanwhile."""
        owner, ttl_ms = new_ulid(), int(self.config.lock_ttl_s * 1000)
        deadline = time.monotonic() + self.config.lock_wait_s
        while not await self.catalog.try_lock.remote(lock_key, owner, ttl_ms):
            if time.monotonic() > deadline:
                raise HTTPException(
                    503, "another replica is still rendering this cue; retry", {"Retry-After": "5"}
                )
            await asyncio.sleep(self.config.lock_poll_s)
        renewal = asyncio.create_task(self._renew(lock_key, owner, ttl_ms))
        try:
            yield
        finally:
            renewal.cancel()
            with contextlib.suppress(Exception):  # else it expires after its TTL
                await self.catalog.unlock.remote(lock_key, owner)

    async def _renew(self, lock_key: str, owner: str, ttl_ms: int) -> None:
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            with contextlib.suppress(Exception):  # a missed renewal only risks a duplicate render
                await self.catalog.try_lock.remote(lock_key, owner, ttl_ms)

    async def _render_variant(
        self, key: PromptKey, style: StyleProfile, cue: str, claim_for: list[str]
    ) -> tuple[Variant, list[str]]:
        """Render → dedupe (new seed while too close to a sibling) → animate → encode → catalog
        (the row, then a claim for each of ``claim_for``). The variant and who it was claimed for.
        """
        siblings: list[Variant] = await self.catalog.list_variants.remote(key.pk_id)
        known = [v.phash for v in siblings if v.phash is not None]
        references = await self._style_references(style)
        prompt, negative = render_prompt(style, cue)
        sid = style_id(style)
        renderer = self.renderer.options(multiplexed_model_id=sid)
        best: tuple[Any, DedupeVerdict, int] | None = None
        for _ in range(self.config.dedupe_attempts):
            seed = secrets.randbits(63)
            reference = references[seed % len(references)] if references else None
            image = renderer.render.remote(
                RenderJob(
                    style_id=sid,
                    base_model_ref=style.base_model_ref,
                    lora_ids=style.lora_ids,
                    prompt=prompt,
                    negative_prompt=negative,
                    seed=seed,
                    reference_key=reference,
                    reference_strength=style.reference_strength if reference else None,
                )
            )
            verdict: DedupeVerdict = await self.dedupe.check.remote(image, known)
            if best is None or _distance(verdict) > _distance(best[1]):
                best = (image, verdict, seed)
            if not verdict.duplicate:
                break
        assert best is not None
        image, verdict, seed = best
        variant_id = new_ulid()
        stem = f"soul/{key.soul_id}/key/{key.key_hash}/variant/{variant_id}"
        frames = self.animator.animate.remote(
            image,
            AnimateJob(
                base_model_ref=style.base_model_ref,
                lora_ids=style.lora_ids,
                prompt=prompt,
                negative_prompt=negative,
                seed=seed,
                mode=style.animation,
                motion_module=style.motion_module,
            ),
        )
        sidecar = {
            "variant_id": variant_id,
            "pk_id": key.pk_id,
            "soul_id": key.soul_id,
            "key_norm": key.key_norm,
            "cue": cue,
            "phash": verdict.phash,
        }
        asset: EncodedAsset = await self.transcoder.encode.remote(
            frames, EncodeJob(storage_stem=stem, sidecar=sidecar)
        )
        variant = Variant(
            variant_id=variant_id,
            pk_id=key.pk_id,
            soul_id=key.soul_id,
            asset_url=asset.asset_url,
            storage_key=asset.gif_key,
            seed=seed,
            phash=verdict.phash,
            meta={
                **asset.meta,
                "cover_key": asset.cover_key,
                "sidecar_key": asset.sidecar_key,
                "dedupe_min_distance": verdict.min_distance,
            },
        )
        try:
            return variant, await self.catalog.put_variant.remote(variant, claim_for)
        except Exception:
            for object_key in (*asset.meta["formats"].values(), asset.cover_key, asset.sidecar_key):
                self.objects.delete(object_key)
            raise

    async def _style_references(self, style: StyleProfile) -> list[str]:
        """The soul's reference keys when its style renders from them, else none."""
        if style.reference_strength is None:
            return []
        return await asyncio.to_thread(self.objects.list, reference_prefix(style.soul_id))

    async def _once(
        self,
        request: Request,
        response: Response,
        idempotency_key: str | None,
        params: dict[str, Any],
        work: Callable[[], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Run ``work`` once per Idempotency-Key: its result is stored, and replayed on retry."""
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
            raise HTTPException(
                422, "Idempotency-Key: already used with different parameters; use a new key"
            )
        if start.outcome == "in_flight":
            raise HTTPException(
                409,
                "Idempotency-Key: the first request with this key is still running; retry later",
                {"Retry-After": "2"},
            )
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

    def _answer(
        self, variant: Variant, cache: Literal["hit", "miss"], media_format: MediaFormat
    ) -> ImageResponse:
        # Variants encoded before formats were recorded have their GIF only.
        formats: dict[str, str] = variant.meta.get("formats", {"gif": variant.storage_key})
        if media_format not in formats:
            raise HTTPException(
                409,
                f"format: {media_format!r} is not available; this service encodes "
                f"{', '.join(sorted(formats))}",
            )
        ttl = self.settings.media_url_ttl_s
        media = self.objects.signed_url(formats[media_format], ttl)
        cover = self.objects.signed_url(variant.meta.get("cover_key", variant.storage_key), ttl)
        return ImageResponse(
            url=media.url,
            format=media_format,
            cover_url=cover.url,
            variant_id=variant.variant_id,
            pk_id=variant.pk_id,
            cache=cache,
            expires_at=media.expires_at,
        )

    # ---- selfies ------------------------------------------------------------------------
    @api.get("/cities", tags=["selfies"], dependencies=[Authorized])
    async def cities(self) -> dict[str, Any]:
        """Cities with their landmarks, and the moods and camera angles a selfie can have."""
        return {
            "cities": [
                {"city_key": key, "display_name": c.display_name, "landmarks": list(c.landmarks)}
                for key, c in self.places.cities.items()
            ],
            "moods": list(self.places.moods),
            "angles": list(self.places.angles),
        }

    @api.post("/selfie", response_model=SelfieResponse, tags=["selfies"], dependencies=[Authorized])
    async def selfie(
        self,
        request: Request,
        response: Response,
        body: SelfieRequest,
        idempotency_key: IdempotencyKey = None,
    ) -> SelfieResponse:
        """The soul at a landmark of the city this user has not had (else the least recently
        used one, from a new angle), in their style and mood."""
        if body.city_key not in self.places.cities:
            known = ", ".join(self.places.cities)
            raise HTTPException(404, f"unknown city {body.city_key!r}; known cities: {known}")
        if body.mood not in self.places.moods:
            moods = ", ".join(self.places.moods)
            raise HTTPException(422, f"mood: unknown {body.mood!r}; one of: {moods}")
        params = body.model_dump(mode="json")
        shot = Shot.model_validate(
            await self._once(request, response, idempotency_key, params, lambda: self._shoot(body))
        )
        answer = await asyncio.to_thread(self._answer, shot.variant, shot.cache, "gif")
        _delivered("/selfie", response, shot)
        return SelfieResponse(
            **answer.model_dump(), landmark_key=shot.landmark_key, angle=shot.angle
        )

    async def _shoot(self, body: SelfieRequest) -> dict[str, Any]:
        """Style → next shot (logged) → its exact prompt key → deliver as /image does."""
        style: StyleProfile | None = await self.catalog.get_style.remote(body.soul_id)
        if style is None:
            await self._require_soul(body.soul_id)
            raise _no_style(body.soul_id)
        city = self.places.cities[body.city_key]
        shot = await self.catalog.choose_shot.remote(
            body.soul_id,
            body.city_key,
            body.user_id,
            list(city.landmarks),
            list(self.places.angles),
        )
        if shot is None:
            raise HTTPException(503, "too many concurrent selfies; retry", {"Retry-After": "1"})
        landmark, angle = shot
        key = await self.catalog.ensure_key.remote(
            body.soul_id, f"selfie:{body.city_key}:{landmark}:{body.mood}:{angle}"
        )
        scene = ", ".join(
            [
                f"selfie in {city.display_name}",
                city.landmarks[landmark],
                self.places.moods[body.mood],
                self.places.angles[angle],
            ]
        )
        claimed = await self.catalog.claim_unseen.remote(key.pk_id, body.user_id)
        delivery = await self._deliver_key(key, style, scene, body.user_id, claimed)
        return {**delivery, "landmark_key": landmark, "angle": angle}

    # ---- media --------------------------------------------------------------------------
    @api.get("/media/{storage_key:path}", tags=["media"])
    async def media(
        self,
        storage_key: str,
        exp: Annotated[int, Query()],
        sig: Annotated[str, Query(max_length=100)],
    ) -> FileResponse:
        """An object of the local store, only with a valid, unexpired signature."""
        if not isinstance(self.objects, LocalObjectStore):
            raise HTTPException(404, "media is served by the object store's own signed URLs")
        if not self.objects.verify(storage_key, exp, sig):
            raise HTTPException(403, "invalid or expired media signature")
        path = self.objects.path(storage_key)
        if not path.is_file():
            raise HTTPException(404, "no such object")
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(
            path, media_type=media_type, headers={"Cache-Control": "private, max-age=300"}
        )

    # ---- styles -------------------------------------------------------------------------
    @api.post("/style", response_model=StyleProfile, tags=["styles"], dependencies=[Authorized])
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
            await asyncio.to_thread(self._check_model_refs, style)
            stored = await self.catalog.put_style.remote(StyleProfile.model_validate(params))
            if stored is None:
                raise HTTPException(404, f"unknown soul {style.soul_id!r}")
            return stored.model_dump(mode="json")

        return StyleProfile.model_validate(
            await self._once(request, response, idempotency_key, params, upsert)
        )

    def _check_model_refs(self, style: StyleProfile) -> None:
        """CivitAI refs must exist and be safetensors before a style may use them."""
        for ref in [style.base_model_ref, *(parse_lora(e)[0] for e in style.lora_ids)]:
            self.models.check_remote(ref)

    @api.get(
        "/style", response_model=list[StyleProfile], tags=["styles"], dependencies=[Authorized]
    )
    async def list_styles(self) -> list[StyleProfile]:
        return await self.catalog.list_styles.remote()

    @api.get(
        "/style/{soul_id}", response_model=StyleProfile, tags=["styles"], dependencies=[Authorized]
    )
    async def get_style(self, soul_id: SoulId) -> StyleProfile:
        style = await self.catalog.get_style.remote(soul_id)
        if style is None:
            raise HTTPException(404, f"no style profile for soul {soul_id!r}")
        return style

    @api.delete("/style/{soul_id}", status_code=204, tags=["styles"], dependencies=[Authorized])
    async def delete_style(
        self,
        request: Request,
        response: Response,
        soul_id: SoulId,
        idempotency_key: IdempotencyKey = None,
    ) -> Response:
        async def delete() -> dict[str, Any]:
            if not await self.catalog.delete_style.remote(soul_id):
                raise HTTPException(404, f"no style profile for soul {soul_id!r}")
            return {}

        await self._once(request, response, idempotency_key, {"soul_id": soul_id}, delete)
        return Response(status_code=204, headers=response.headers)

    # ---- reference images --------------------------------------------------------------
    @api.post(
        "/ingest/reference",
        response_model=IngestedReference,
        tags=["references"],
        dependencies=[Authorized],
    )
    async def ingest_reference(
        self,
        request: Request,
        response: Response,
        body: ReferenceRequest,
        idempotency_key: IdempotencyKey = None,
    ) -> IngestedReference:
        """Fetch an image for a soul, verify it and store it as a plain RGB PNG."""
        params = body.model_dump(mode="json")

        async def ingest() -> dict[str, Any]:
            await self._require_soul(body.soul_id)
            image = await asyncio.to_thread(fetch_reference, body.url, self.settings)
            key = reference_key(body.soul_id, new_ulid())
            await asyncio.to_thread(self.objects.put, key, image.png)
            stored = StoredReference(
                storage_key=key, width=image.width, height=image.height, bytes=len(image.png)
            )
            return stored.model_dump(mode="json")

        result = await self._once(request, response, idempotency_key, params, ingest)
        stored = StoredReference.model_validate(result)
        reference = await asyncio.to_thread(self._reference, body.soul_id, stored.storage_key)
        return IngestedReference.model_validate({**stored.model_dump(), **reference.model_dump()})

    @api.get(
        "/ingest/reference/{soul_id}",
        response_model=list[Reference],
        tags=["references"],
        dependencies=[Authorized],
    )
    async def list_references(self, soul_id: SoulId) -> list[Reference]:
        """A soul's reference images, oldest first, with signed URLs."""
        await self._require_soul(soul_id)
        return await asyncio.to_thread(self._references, soul_id)

    async def _require_soul(self, soul_id: str) -> None:
        if await self.catalog.get_soul.remote(soul_id) is None:
            raise HTTPException(404, f"unknown soul {soul_id!r}")

    def _references(self, soul_id: str) -> list[Reference]:
        keys = self.objects.list(reference_prefix(soul_id))
        return [self._reference(soul_id, key) for key in keys]

    def _reference(self, soul_id: str, storage_key: str) -> Reference:
        signed = self.objects.signed_url(storage_key, self.settings.media_url_ttl_s)
        return Reference(
            soul_id=soul_id,
            reference_id=storage_key.rpartition("/")[2].removesuffix(".png"),
            storage_key=storage_key,
            url=signed.url,
            expires_at=signed.expires_at,
        )
