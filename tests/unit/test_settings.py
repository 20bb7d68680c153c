"""Settings by concern: each group reads the same ``SOUL_*`` variables a flat class would, flat
keywords reach the group that declares them, and every field belongs to exactly one group."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serve_app.settings import JobSettings, MediaSettings, Settings, groups

# One variable of each group, the value it is set to, and where Settings holds it.
FROM_ENV = [
    ("SOUL_DATA_DIR", "/srv/soul", ("node", "data_dir"), Path("/srv/soul")),
    ("PORT", "9001", ("node", "port"), 9001),
    ("SOUL_DATABASE_POOL_MAX", "7", ("store", "database_pool_max"), 7),
    (
        "SOUL_GCS_ENDPOINT",
        "http://127.0.0.1:9023",
        ("objects", "gcs_endpoint"),
        "http://127.0.0.1:9023",
    ),
    ("SOUL_TORCH_THREADS", "3", ("models", "torch_threads"), 3),
    ("SOUL_REFERENCE_GCS_BUCKETS", '["refs"]', ("references", "reference_gcs_buckets"), ["refs"]),
    ("SOUL_MEDIA_URL_TTL_S", "120", ("media", "media_url_ttl_s"), 120),
    ("SOUL_ALLOW_NO_API_KEYS", "true", ("auth", "allow_no_api_keys"), True),
    ("SOUL_JOB_SUBMIT_RATE", "5", ("jobs", "job_submit_rate"), 5),
    ("SOUL_MAX_HEADERS", "50", ("limits", "max_headers"), 50),
]


@pytest.mark.parametrize(("variable", "value", "place", "expected"), FROM_ENV)
def test_each_group_reads_its_variables(
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    place: tuple[str, str],
    expected: object,
) -> None:
    monkeypatch.setenv(variable, value)
    group, field = place
    assert getattr(getattr(Settings(), group), field) == expected


def test_every_group_is_read() -> None:
    assert {place[0] for _, _, place, _ in FROM_ENV} == set(groups())


def test_a_field_belongs_to_one_group() -> None:
    fields = [name for model in groups().values() for name in model.model_fields]
    assert len(fields) == len(set(fields))


def test_flat_keywords_go_to_their_group_and_the_rest_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SOUL_MEDIA_URL_TTL_S", "120")
    settings = Settings(data_dir=tmp_path, media_secret="s3cr3t", torch_threads=2)
    assert settings.node.data_dir == tmp_path
    assert settings.models.torch_threads == 2
    assert settings.media.media_url_ttl_s == 120  # same group as media_secret, from the env
    assert settings.media_key == b"s3cr3t"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'catalog.db'}"


def test_a_group_may_be_given_whole() -> None:
    media = MediaSettings(media_url_ttl_s=60)
    assert Settings(media=media).media is media
    with pytest.raises(ValueError, match="whole or by its fields"):
        Settings(media=media, media_secret="s3cr3t")


def test_unknown_and_invalid_keywords_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Settings(media_ttl=60)
    with pytest.raises(ValidationError, match="job_queued_quota"):
        Settings(job_queued_quota=0)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        JobSettings(media_url_ttl_s=60)  # a group takes only its own fields
