"""The typed builder of the graph: ``import_path: serve_app.app:build_app`` in config/*.yaml."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from ray.serve import Application, Deployment

from deployments.animator import Animator, AnimatorConfig
from deployments.catalog import Catalog, CatalogConfig
from deployments.dedupe import Dedupe, DedupeConfig
from deployments.embedder import Embedder
from deployments.renderer import Renderer, RendererConfig
from deployments.transcoder import Transcoder, TranscoderConfig
from serve_app.ingress import Ingress, IngressConfig


class AppArgs(BaseModel):
    """Arguments of the application; each section becomes its deployment's ``user_config``."""

    souls_file: str = Field(default="config/souls.yaml", description="Souls shipped as data.")
    ingress: IngressConfig = Field(default_factory=IngressConfig)
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    renderer: RendererConfig = Field(default_factory=RendererConfig)
    animator: AnimatorConfig = Field(default_factory=AnimatorConfig)
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig)
    transcoder: TranscoderConfig = Field(default_factory=TranscoderConfig)


def build_app(args: dict[str, Any] | AppArgs) -> Application:
    args = AppArgs.model_validate(args)

    def live(section: BaseModel) -> dict[str, Any]:
        return {"user_config": section.model_dump(mode="json")}

    return (
        deployment(Ingress)
        .options(**live(args.ingress))
        .bind(
            deployment(Embedder).bind(),
            deployment(Catalog).options(**live(args.catalog)).bind(args.souls_file),
            deployment(Renderer).options(**live(args.renderer)).bind(),
            deployment(Animator).options(**live(args.animator)).bind(),
            deployment(Dedupe).options(**live(args.dedupe)).bind(),
            deployment(Transcoder).options(**live(args.transcoder)).bind(),
        )
    )


def deployment(decorated: object) -> Deployment:
    """``@serve.deployment`` turned each class into a Deployment; type checkers see the class."""
    if not isinstance(decorated, Deployment):
        raise TypeError(f"{decorated!r} is not a Serve deployment")
    return decorated
