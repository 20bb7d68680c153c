"""The composition root: the typed builder of the graph (``import_path: serve_app.app:build_app``
in config/*.yaml). Besides the benchmarks, which start deployments' engines directly, the only
module of the package that imports ``deployments``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application, Deployment

from deployments.animator import Animator, AnimatorConfig
from deployments.catalog import Catalog, CatalogConfig
from deployments.dedupe import Dedupe, DedupeConfig
from deployments.embedder import Embedder
from deployments.ingress import Ingress, IngressConfig
from deployments.renderer import Renderer, RendererConfig
from deployments.transcoder import Transcoder, TranscoderConfig
from deployments.upscaler import Upscaler, UpscalerConfig
from deployments.worker import JobWorker, WorkerConfig
from serve_app.delivery import DeliveryConfig, Handles
from serve_app.settings import Settings

SHED_RETRY_AFTER_S = 2
DeploymentName = Literal[
    "Ingress",
    "Embedder",
    "Catalog",
    "Renderer",
    "Animator",
    "Dedupe",
    "Transcoder",
    "Upscaler",
    "JobWorker",
]


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_ongoing_requests: int | None = Field(default=None, ge=1, description="Per replica.")
    max_queued_requests: int | None = Field(
        default=None, ge=1, description="Waiting requests per caller; past it, Serve sheds (503)."
    )


class Logging(BaseModel):
    """Serve's ``logging_config`` of every deployment, set here and not per application: a
    deployment's own logging config replaces the application's whole, and only the Ingress
    writes Serve's access log (an internal deployment's lines would repeat its callers')."""

    model_config = ConfigDict(extra="forbid")

    encoding: Literal["TEXT", "JSON"] = Field(
        default="TEXT", description="TEXT for people, JSON for log collectors (one record a line)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="The least severe record the replicas write."
    )
    logs_dir: str | None = Field(
        default=None, description="Folder of the replicas' log files. Empty: Ray's session folder."
    )
    access_log: list[DeploymentName] = Field(
        default=["Ingress"],
        description="Deployments that log a line per request (Serve's access log). The Ingress's "
        "carries the route and request id; the internal deployments' would only repeat their "
        "callers' calls (idle: a Catalog line per JobWorker replica every lease_wait_s, and "
        "the workers' heartbeats).",
    )

    def of(self, deployment: str) -> dict[str, Any]:
        """Serve's logging config of ``deployment``."""
        config = self.model_dump(exclude={"access_log"}, exclude_none=True)
        return {**config, "enable_access_log": deployment in self.access_log}


class AppArgs(BaseModel):
    """Arguments of the application; each section becomes its deployment's ``user_config``."""

    model_config = ConfigDict(extra="forbid")

    souls_file: str = Field(default="config/souls.yaml", description="Souls shipped as data.")
    landmarks_file: str = Field(
        default="config/landmarks.yaml",
        description="Selfie places: cities, landmarks, camera angles, moods.",
    )
    variations_file: str = Field(
        default="config/variations.yaml",
        description="What pack jobs vary between items: poses, expressions, angles.",
    )
    ingress: IngressConfig = Field(
        default_factory=IngressConfig,
        description="The Ingress: delivery, Idempotency-Key and job-queue knobs.",
    )
    catalog: CatalogConfig = Field(
        default_factory=CatalogConfig,
        description="The Catalog: key matching, each soul's key index, sweeping, cost.",
    )
    renderer: RendererConfig = Field(
        default_factory=RendererConfig,
        description="The Renderer: render size and steps, device, styles and LoRAs kept, batching.",
    )
    animator: AnimatorConfig = Field(
        default_factory=AnimatorConfig,
        description="The Animator: frames, img2img strength and steps, the video model.",
    )
    dedupe: DedupeConfig = Field(
        default_factory=DedupeConfig,
        description="Dedupe: the pHash threshold and the optional CLIP filter.",
    )
    transcoder: TranscoderConfig = Field(
        default_factory=TranscoderConfig,
        description="The Transcoder: frame rate, width, formats, thumbnail size.",
    )
    upscaler: UpscalerConfig = Field(
        default_factory=UpscalerConfig,
        description="The Upscaler: Real-ESRGAN models, tile and overlap, device (print versions).",
    )
    worker: WorkerConfig = Field(
        default_factory=WorkerConfig,
        description="The JobWorker: slots, leases, retries, webhooks, and its delivery knobs "
        "(those left unset follow ingress:).",
    )
    replicas: dict[DeploymentName, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description='Fixed replica counts by deployment name, e.g. {"Ingress": 2}, for runs '
        "without a Serve config (tests, benchmarks); a config's deployments section also works.",
    )
    limits: dict[DeploymentName, Limits] = Field(
        default_factory=dict,
        description='Request limits by deployment name, e.g. {"Renderer": {"max_queued_requests": '
        "4}}, for runs without a Serve config; a config's deployments section also works.",
    )
    logging: Logging = Field(
        default_factory=Logging,
        description="How the deployments log: encoding, level, folder, which write access logs.",
    )


def worker_config(args: AppArgs) -> WorkerConfig:
    """The JobWorker's live config: unless set apart under worker:, jobs deliver with the
    Ingress's delivery knobs."""
    delivery = args.ingress.model_dump(include=set(DeliveryConfig.model_fields))
    return WorkerConfig.model_validate({**delivery, **args.worker.model_dump(exclude_unset=True)})


def build_app(args: dict[str, Any] | AppArgs) -> Application:
    args = AppArgs.model_validate(args)
    Settings().check_exposure()  # refused here, before any replica starts, on every way in

    def deployment(
        decorated: object, section: BaseModel | None = None, **defaults: Any
    ) -> Deployment:
        """Each deployment with its live config, ``defaults`` for its options and, if asked, a
        fixed replica count and request limits."""
        # @serve.deployment turned each class into a Deployment; type checkers see the class.
        if not isinstance(decorated, Deployment):
            raise TypeError(f"{decorated!r} is not a Serve deployment")
        # A request shed by a full queue (max_queued_requests) is a 503 that says when to retry.
        options: dict[str, Any] = {
            "backpressure_config": {"retry_after_s": SHED_RETRY_AFTER_S},
            "logging_config": args.logging.of(decorated.name),
            **defaults,
        }
        if section is not None:
            options["user_config"] = section.model_dump(mode="json")
        if decorated.name in args.replicas:
            options["num_replicas"] = args.replicas[decorated.name]
        if decorated.name in args.limits:
            options |= args.limits[decorated.name].model_dump(exclude_none=True)
        return decorated.options(**options)

    catalog = deployment(Catalog, args.catalog).bind(args.souls_file)
    # Serve finds the applications inside the record and binds their handles in their place.
    handles = Handles(
        embedder=deployment(Embedder).bind(),
        catalog=catalog,
        # A replica takes as many renders at once as it batches.
        renderer=deployment(
            Renderer, args.renderer, max_ongoing_requests=args.renderer.max_batch_size
        ).bind(catalog, args.renderer.max_styles),
        animator=deployment(Animator, args.animator).bind(catalog),
        dedupe=deployment(Dedupe, args.dedupe).bind(),
        transcoder=deployment(Transcoder, args.transcoder).bind(),
        upscaler=deployment(Upscaler, args.upscaler).bind(),
    )
    data_files = (args.landmarks_file, args.variations_file)
    # Bound into the Ingress so that it is deployed (and scaled, and restarted) with the graph;
    # it meets the Ingress only through the Catalog (its leases wait there for queued jobs).
    worker = deployment(JobWorker, worker_config(args)).bind(handles, *data_files)
    return deployment(Ingress, args.ingress).bind(handles, *data_files, worker)
