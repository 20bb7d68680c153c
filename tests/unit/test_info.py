"""GET /info's answer from what Serve, the catalog and the Transcoder report (no Ray)."""

from __future__ import annotations

from pathlib import Path

from ray.serve._private.common import DeploymentStatus, DeploymentStatusTrigger, ReplicaState
from ray.serve.schema import (
    ApplicationStatus,
    ApplicationStatusOverview,
    DeploymentStatusOverview,
    ServeStatus,
)

from serve_app.api.info import service_info
from serve_app.schemas import StyleProfile
from serve_app.settings import Settings


def deployment(running: int) -> DeploymentStatusOverview:
    return DeploymentStatusOverview(
        status=DeploymentStatus.HEALTHY,
        status_trigger=DeploymentStatusTrigger.CONFIG_UPDATE_COMPLETED,
        replica_states={ReplicaState.RUNNING: running, ReplicaState.STARTING: 1},
        message="",
    )


def test_info_names_deployments_models_formats_and_backends_never_urls(tmp_path: Path) -> None:
    status = ServeStatus(
        applications={
            "soul": ApplicationStatusOverview(
                status=ApplicationStatus.RUNNING,
                message="",
                last_deployed_time_s=0.0,
                deployments={"Renderer": deployment(2), "Ingress": deployment(1)},
            )
        }
    )
    styles = [
        StyleProfile(soul_id="nova", base_model_ref="tiny-sdxl", lora_ids=["tiny-lora-ink=0.8"]),
        StyleProfile(soul_id="valentina", base_model_ref="tiny-sdxl", motion_module="tiny-motion"),
    ]
    secret_dsn = "postgresql://soul:s3cret@db.internal:5432/soul"
    settings = Settings(data_dir=tmp_path, database_url=secret_dsn)
    variations = ["pose", "expression", "angle"]
    info = service_info(status, styles, ["webp", "gif"], variations, settings, "gcs")

    assert [(d.name, d.status, d.replicas) for d in info.deployments] == [
        ("Ingress", "HEALTHY", 1),
        ("Renderer", "HEALTHY", 2),
    ]
    assert info.models == ["tiny-lora-ink", "tiny-motion", "tiny-sdxl"]
    assert info.formats == ["gif", "webp"]
    assert info.variations == ["pose", "expression", "angle"]
    assert (info.backends.catalog, info.backends.objects, info.backends.embedded) == (
        "postgresql",
        "gcs",
        False,
    )
    assert "s3cret" not in info.model_dump_json() and "db.internal" not in info.model_dump_json()
    assert info.version

    embedded = service_info(ServeStatus(), [], [], [], Settings(data_dir=tmp_path), "local")
    assert (embedded.deployments, embedded.backends.catalog, embedded.backends.embedded) == (
        [],
        "sqlite",
        True,
    )
