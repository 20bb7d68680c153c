"""Safe by default: a production backend (PostgreSQL, a gs:// bucket) is never served without API
keys unless the operator says the network is private; `soul serve` and the app's builder refuse
before anything starts, naming the setting to set."""

from __future__ import annotations

import pytest

from serve_app import cli
from serve_app.app import build_app
from serve_app.settings import Settings, UnsafeSettings

DSN = "postgresql://soul@db.internal:5432/soul"
BUCKET = "gs://artifacts-prod-soulmedia"


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (Settings(database_url=DSN), "SOUL_DATABASE_URL is PostgreSQL"),
        (Settings(database_url="postgres://soul@db/soul"), "SOUL_DATABASE_URL is PostgreSQL"),
        (Settings(object_store_url=BUCKET), "SOUL_OBJECT_STORE_URL is a gs:// bucket"),
    ],
)
def test_a_production_backend_without_api_keys_is_refused_naming_the_settings(
    settings: Settings, named: str
) -> None:
    with pytest.raises(UnsafeSettings) as refused:
        settings.check_exposure()
    message = str(refused.value)
    assert named in message
    assert "Set SOUL_API_KEYS" in message and "SOUL_ALLOW_NO_API_KEYS=true" in message


@pytest.mark.parametrize(
    "settings",
    [
        Settings(),  # SQLite and local objects: a developer's machine
        Settings(database_url="sqlite:///var/catalog.db", object_store_url="/srv/objects"),
        Settings(database_url=DSN, object_store_url=BUCKET, api_keys=["k1"]),
        Settings(database_url=DSN, object_store_url=BUCKET, allow_no_api_keys=True),
    ],
)
def test_local_backends_keys_or_the_private_network_opt_out_may_start(settings: Settings) -> None:
    settings.check_exposure()


def test_the_opt_out_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUL_DATABASE_URL", DSN)
    monkeypatch.setenv("SOUL_ALLOW_NO_API_KEYS", "true")
    Settings().check_exposure()


def test_soul_serve_refuses_before_starting_ray(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The unit suite's ``no_ray`` fixture fails the test if Ray were started."""
    monkeypatch.setenv("SOUL_DATABASE_URL", DSN)
    monkeypatch.delenv("SOUL_API_KEYS", raising=False)
    assert cli.main(["serve"]) == 2
    assert "soul serve: SOUL_DATABASE_URL is PostgreSQL" in capsys.readouterr().err


def test_the_app_builder_refuses_so_a_serve_config_deploy_does_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOUL_OBJECT_STORE_URL", BUCKET)
    monkeypatch.delenv("SOUL_API_KEYS", raising=False)
    with pytest.raises(UnsafeSettings, match="SOUL_API_KEYS"):
        build_app({})
