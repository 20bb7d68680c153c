"""The one place that reads environment variables (prefix ``SOUL_``), in groups by concern.

Each group is its own settings class, read from the same ``SOUL_*`` names as one flat class
would; ``Settings`` holds them all, with what combines groups (the resolved paths, the keys
kept in the data folder, the exposure check). A consumer that needs one concern takes its group.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SOUL_ENV = SettingsConfigDict(env_prefix="SOUL_", extra="forbid")


class UnsafeSettings(ValueError):
    """The settings would expose a production backend without authentication."""


class NodeSettings(BaseSettings):
    """This machine: the folder of its embedded state; the address and ports of `soul serve`."""

    model_config = SOUL_ENV

    data_dir: Path = Field(
        default=Path("var"),
        description="Folder for the embedded defaults: SQLite catalog, local objects, models.",
    )
    host: str = Field(default="127.0.0.1", description="HTTP bind address of `soul serve`.")
    port: int = Field(
        default=8000, ge=1, le=65535, validation_alias="PORT", description="HTTP port."
    )
    dashboard_port: int = Field(
        default=8265, ge=1, le=65535, description="Ray dashboard port of `soul serve` (localhost)."
    )
    metrics_port: int = Field(
        default=8080,
        ge=1,
        le=65535,
        description="Port of the node's Prometheus metrics endpoint under `soul serve`.",
    )
    autoscaler_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the Prometheus endpoint of Ray's autoscaler under `soul serve` "
        "(localhost). 0: any free port, so two services on one host never collide.",
    )
    dashboard_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the Prometheus endpoint of Ray's dashboard under `soul serve` "
        "(localhost). 0: any free port.",
    )


class StoreSettings(BaseSettings):
    """The catalog's database and its connection pool."""

    model_config = SOUL_ENV

    database_url: str = Field(
        default="",
        description="Catalog DSN: sqlite:///path.db or postgresql://... Empty: SQLite in data_dir.",
    )
    database_pool_min: int = Field(
        default=1, ge=0, le=100, description="PostgreSQL connections a Catalog replica keeps open."
    )
    database_pool_max: int = Field(
        default=10, ge=1, le=200, description="Most PostgreSQL connections per Catalog replica."
    )
    database_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="Longest wait for a PostgreSQL connection before the request gets a 503.",
    )


class ObjectSettings(BaseSettings):
    """The object store of the media, and the GCS credentials that reach a bucket."""

    model_config = SOUL_ENV

    object_store_url: str = Field(
        default="",
        description="fsspec URL of the object store: a folder path, file://... or "
        "gs://bucket[/prefix]. Empty: data_dir/objects.",
    )
    gcs_credentials_file: Path | None = Field(
        default=None,
        description="Service-account JSON key that signs gs:// media URLs (and reaches the "
        "bucket). Empty: Application Default Credentials (workload identity), which sign "
        "through IAM signBlob.",
    )
    gcs_endpoint: str = Field(
        default="",
        description="GCS endpoint, e.g. an emulator (http://127.0.0.1:9023), reached without "
        "credentials; signed URLs point at it. Empty: https://storage.googleapis.com.",
    )


class ModelSettings(BaseSettings):
    """Where models come from, how large a download may be, and how torch runs them."""

    model_config = SOUL_ENV

    models_dir: Path | None = Field(
        default=None, description="Folder of local model folders. Empty: data_dir/models."
    )
    model_cache_url: str = Field(
        default="",
        description="Where downloaded models are mirrored (gs://bucket/prefix, or a folder), "
        "each file with its SHA256, so a new node copies them from there (verified) instead "
        "of from CivitAI. Empty: no mirror.",
    )
    civitai_url: str = Field(
        default="https://civitai.com", description="Base URL of the CivitAI REST API."
    )
    civitai_token: SecretStr | None = Field(
        default=None, description="CivitAI API token, sent as a bearer header on downloads."
    )
    model_max_bytes: int = Field(
        default=8 << 30, ge=1, description="Largest model file the model manager downloads."
    )
    torch_threads: int = Field(
        default=0, ge=0, description="torch intra-op threads per replica; 0 keeps torch's default."
    )


class ReferenceSettings(BaseSettings):
    """What a reference image fetch may reach, read and decode."""

    model_config = SOUL_ENV

    reference_max_bytes: int = Field(
        default=10 << 20,
        ge=1,
        description="Largest reference image POST /ingest/reference fetches.",
    )
    reference_max_pixels: int = Field(
        default=40_000_000,
        ge=1,
        description="Most pixels (width x height) a reference image may have; checked before "
        "decoding, against decompression bombs.",
    )
    reference_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="Timeout of each step of a reference fetch."
    )
    reference_allow_private_hosts: bool = Field(
        default=False,
        description="Let reference URLs reach loopback, private, link-local and other non-public "
        "addresses. Off: such hosts are refused (no requests into the cluster's own network); "
        "for tests and local development only.",
    )
    reference_gcs_buckets: list[str] = Field(
        default_factory=list,
        description="Buckets gs:// reference URLs may name (JSON list); they are read with this "
        "service's GCS credentials. Empty: gs:// references are refused.",
    )


class MediaSettings(BaseSettings):
    """Delivered media URLs: their signing key, lifetime and base."""

    model_config = SOUL_ENV

    media_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key that signs /media URLs. Empty: a random key kept in "
        "data_dir/media.key (created once, mode 600).",
    )
    media_url_ttl_s: int = Field(
        default=3600, ge=10, le=7 * 24 * 3600, description="Lifetime of a delivered URL."
    )
    public_base_url: str = Field(
        default="",
        description="Base of delivered URLs, e.g. https://soul.example.com. "
        "Empty: URLs are relative (/media/...).",
    )


class AuthSettings(BaseSettings):
    """Who may call the service: the API and admin bearer keys."""

    model_config = SOUL_ENV

    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer keys the ingress accepts (JSON list). Empty: open, local dev only.",
    )
    allow_no_api_keys: bool = Field(
        default=False,
        description="Serve without API keys although the catalog is on PostgreSQL or the objects "
        "in a gs:// bucket: only for a private network whose every client is trusted. Off: such a "
        "service refuses to start until SOUL_API_KEYS is set.",
    )
    admin_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer keys of the /admin routes (JSON list); an admin key is also an API "
        "key. Empty: the /admin routes are off (403).",
    )


class JobSettings(BaseSettings):
    """Jobs: each client's quota and submit rate, and the webhooks that report them."""

    model_config = SOUL_ENV

    job_queued_quota: int = Field(
        default=100, ge=1, description="Unfinished jobs one API client may have at a time."
    )
    job_submit_rate: int = Field(
        default=120, ge=1, description="Jobs one API client may submit per minute."
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key that signs job webhooks (Soul-Signature). Empty: a random key kept "
        "in data_dir/webhook.key (created once, mode 600).",
    )
    webhook_allow_private_hosts: bool = Field(
        default=False,
        description="Let job webhooks reach loopback and private addresses (development only).",
    )


class LimitSettings(BaseSettings):
    """Limits of the edge: the request headers Serve's HTTP proxy passes on."""

    model_config = SOUL_ENV

    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="Most bytes of request headers (names and values) Serve's HTTP proxy "
        "passes on; more is a 431.",
    )
    max_headers: int = Field(
        default=100, ge=10, description="Most request headers the HTTP proxy passes on."
    )


class Settings(BaseModel):
    """Every group, each read from the environment by its own class. Flat keywords go to the
    group that declares them (``Settings(data_dir=..., media_secret=...)``); what a group is not
    given it reads from the environment."""

    model_config = ConfigDict(extra="forbid")

    node: NodeSettings
    store: StoreSettings
    objects: ObjectSettings
    models: ModelSettings
    references: ReferenceSettings
    media: MediaSettings
    auth: AuthSettings
    jobs: JobSettings
    limits: LimitSettings

    def __init__(self, **values: Any) -> None:
        super().__init__(**_grouped(values))

    @property
    def resolved_data_dir(self) -> Path:
        return self.node.data_dir.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.store.database_url or f"sqlite:///{self.resolved_data_dir / 'catalog.db'}"

    @property
    def resolved_object_store_url(self) -> str:
        return self.objects.object_store_url or str(self.resolved_data_dir / "objects")

    @property
    def resolved_models_dir(self) -> Path:
        models_dir = self.models.models_dir or self.resolved_data_dir / "models"
        return models_dir.expanduser().resolve()

    def check_exposure(self) -> None:
        """Refuse to serve a production backend to anyone who reaches the port: with PostgreSQL
        or a gs:// bucket, API keys are required unless ``allow_no_api_keys`` says the network
        is private. Raises ``UnsafeSettings`` naming the setting to set."""
        production = [
            name
            for name, is_production in [
                (
                    "SOUL_DATABASE_URL is PostgreSQL",
                    self.store.database_url.startswith(POSTGRES_SCHEMES),
                ),
                (
                    "SOUL_OBJECT_STORE_URL is a gs:// bucket",
                    self.objects.object_store_url.startswith("gs://"),
                ),
            ]
            if is_production
        ]
        if production and not self.auth.api_keys and not self.auth.allow_no_api_keys:
            raise UnsafeSettings(
                f"{' and '.join(production)} but SOUL_API_KEYS is empty, so anyone who reaches "
                "the service could use it. Set SOUL_API_KEYS (a JSON list of bearer keys), or "
                "SOUL_ALLOW_NO_API_KEYS=true if only a private network reaches it."
            )

    @cached_property
    def media_key(self) -> bytes:
        if self.media.media_secret is not None:
            return self.media.media_secret.get_secret_value().encode()
        return _persistent_random_key(self.resolved_data_dir / "media.key")

    @cached_property
    def webhook_key(self) -> bytes:
        if self.jobs.webhook_secret is not None:
            return self.jobs.webhook_secret.get_secret_value().encode()
        return _persistent_random_key(self.resolved_data_dir / "webhook.key")


def groups() -> dict[str, type[BaseSettings]]:
    """The groups by their name in ``Settings``, in its order."""
    return {
        name: cast(type[BaseSettings], field.annotation)
        for name, field in Settings.model_fields.items()
    }


def _grouped(values: dict[str, Any]) -> dict[str, Any]:
    """Flat keywords gathered by the group that declares each; a group not given whole is built
    from its keywords and the environment. A keyword no group declares is left to ``Settings``
    to refuse."""
    by_name = groups()
    owner = {key: group for group, model in by_name.items() for key in model.model_fields}
    flat: dict[str, dict[str, Any]] = {group: {} for group in by_name}
    grouped: dict[str, Any] = {}
    for key, value in values.items():
        if key in owner:
            flat[owner[key]][key] = value
        else:
            grouped[key] = value
    for group, model in by_name.items():
        if group in grouped and flat[group]:
            raise ValueError(
                f"give {group} whole or by its fields, not both: {sorted(flat[group])}"
            )
        if group not in grouped:
            grouped[group] = model(**flat[group])
    return grouped


def _persistent_random_key(path: Path) -> bytes:
    """A random key shared by every replica on this machine: created once, never logged."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
        tmp.write_text(secrets.token_hex(32), encoding="ascii")
        tmp.chmod(0o600)
        with contextlib.suppress(FileExistsError):  # another replica created it first
            os.link(tmp, path)
        tmp.unlink()
    return path.read_text(encoding="ascii").strip().encode()


CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


def config_file(path: str | Path) -> Path:
    """A data file by path; a relative one that is not there is read from the project's
    ``config/`` folder (replicas may start in another working directory)."""
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        return CONFIG_DIR / path.name
    return path
