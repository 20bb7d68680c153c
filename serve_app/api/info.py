"""``GET /info``: what this service is and runs, from what Serve, the catalog and the Transcoder
report; names of backends only, never their URLs (which may hold credentials)."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any, Literal

from serve_app.api.protocol import Backends, DeploymentInfo, InfoView
from serve_app.diffusion.sources import parse_lora
from serve_app.schemas import StyleProfile
from serve_app.settings import Settings

APP = "soul"


def service_info(
    status: Any,
    styles: list[StyleProfile],
    formats: list[str],
    variations: list[str],
    settings: Settings,
    objects: str,
) -> InfoView:
    """``status``: ``serve.status()``; ``variations``: the names a pack can vary;
    ``objects``: the object store's backend name."""
    app = status.applications.get(APP)
    deployments = [
        DeploymentInfo(
            name=name,
            status=getattr(deployment.status, "value", str(deployment.status)),
            replicas=deployment.replica_states.get("RUNNING", 0),
        )
        for name, deployment in sorted((app.deployments if app else {}).items())
    ]
    sqlite = settings.resolved_database_url.startswith("sqlite:")
    catalog_name: Literal["sqlite", "postgresql"] = "sqlite" if sqlite else "postgresql"
    return InfoView(
        version=version("soul-serve"),
        deployments=deployments,
        models=sorted({ref for style in styles for ref in style_models(style)}),
        formats=["gif", *(f for f in formats if f != "gif")],
        variations=variations,
        backends=Backends(
            catalog=catalog_name,
            objects=objects,
            embedded=sqlite and objects == "local",
        ),
    )


def style_models(style: StyleProfile) -> list[str]:
    """The model refs a style renders with: its base model, LoRAs and motion module."""
    loras = [parse_lora(entry)[0] for entry in style.lora_ids]
    return [style.base_model_ref, *loras, *([style.motion_module] if style.motion_module else [])]
