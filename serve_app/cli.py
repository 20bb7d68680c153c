"""The ``soul`` command: models, serving and benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from serve_app.settings import POSTGRES_SCHEMES, Settings, UnsafeSettings


def cmd_models_tiny(ns: argparse.Namespace) -> int:
    from serve_app.diffusion.tiny import build_tiny_models

    models_dir = Path(ns.dest) if ns.dest else Settings().resolved_models_dir
    for path in build_tiny_models(models_dir):
        size = sum(f.stat().st_size for f in [path, *path.rglob("*")] if f.is_file())
        print(f"tiny model ready at {path} ({size / 1e6:.1f} MB)")
    return 0


def cmd_models_pull(ns: argparse.Namespace) -> int:
    """Download (CivitAI) or locate a model ref, verified; prints where it is."""
    from serve_app.diffusion.sources import ModelError, model_manager

    try:
        path = model_manager(Settings()).ensure(ns.ref)
    except ModelError as exc:
        print(f"soul models pull: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


def cmd_models_convert(ns: argparse.Namespace) -> int:
    """A Real-ESRGAN ``.pth`` as safetensors (tensors only: any other pickle is refused)."""
    from serve_app.diffusion.sources import ModelError
    from serve_app.upscale.weights import convert_pth

    source = Path(ns.source)
    dest = (
        Path(ns.dest) if ns.dest else Settings().resolved_models_dir / f"{source.stem}.safetensors"
    )
    try:
        print(convert_pth(source, dest))
    except ModelError as exc:
        print(f"soul models convert: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_serve(ns: argparse.Namespace) -> int:
    """`serve run` on the given Serve config, with host and port from the environment, on a
    local Ray that listens on localhost only (the Serve port aside, where SOUL_HOST says)."""
    import ray
    from ray.serve.scripts import cli as serve_cli

    settings = Settings()
    try:
        settings.check_exposure()  # before Ray starts: the quickest refusal
    except UnsafeSettings as exc:
        print(f"soul serve: {exc}", file=sys.stderr)
        return 2
    config = yaml.safe_load(Path(ns.config).read_text())
    config.setdefault("http_options", {}).update(host=settings.node.host, port=settings.node.port)
    run_file = settings.resolved_data_dir / f"serve.{settings.node.port}.yaml"
    run_file.parent.mkdir(parents=True, exist_ok=True)
    run_file.write_text(yaml.safe_dump(config, sort_keys=False))
    # Before ray.init: the replicas' worker processes inherit this environment.
    os.environ.setdefault("SOUL_DATA_DIR", str(settings.resolved_data_dir))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ray_context = ray.init(
        namespace="serve",  # Serve's own; `serve run` uses the Ray it finds initialized
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=settings.node.dashboard_port,
        _metrics_export_port=settings.node.metrics_port,
    )
    print(
        f"Soul Serve on http://{settings.node.host}:{settings.node.port} (API docs at /docs)\n"
        f"Studio (the web page) on http://{settings.node.host}:{settings.node.port}/studio\n"
        f"Ray dashboard on http://{ray_context.dashboard_url} (this machine only; its token: "
        f"`ray get-auth-token`)\n"
        f"Metrics on http://127.0.0.1:{settings.node.metrics_port}/metrics (ours are ray_soul_*)\n"
        "Ctrl-C stops.",
        flush=True,
    )
    serve_run = ["run", str(run_file)]
    return int(serve_cli.main(serve_run, prog_name="serve", standalone_mode=False) or 0)


def cmd_db_init(ns: argparse.Namespace) -> int:
    """Create the catalog database if it is missing (PostgreSQL) and apply the schema."""
    from serve_app.storage import store_for
    from serve_app.storage.postgres import create_database

    settings = Settings()
    dsn = settings.resolved_database_url
    created = dsn.startswith(POSTGRES_SCHEMES) and create_database(dsn)

    async def apply_schema() -> None:
        store = store_for(settings)
        await store.open()
        await store.close()

    asyncio.run(apply_schema())
    where = urlsplit(dsn)
    print(
        f"catalog schema ready in {where.scheme}://{where.hostname or ''}{where.path}"
        + (" (database created)" if created else "")
    )
    return 0


def cmd_docs_config(ns: argparse.Namespace) -> int:
    """Rewrite docs/configuration.md from the config models' field descriptions."""
    from serve_app import configdoc

    print(f"wrote {configdoc.write()}")
    return 0


def cmd_bench(ns: argparse.Namespace) -> int:
    from serve_app import bench

    return bench.main(ns)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="soul", description="Soul Serve command line.")
    sub = p.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="manage model weights").add_subparsers(
        dest="models_command", required=True
    )
    tiny = models.add_parser("tiny", help="build the tiny models (SDXL, LoRAs, ..., upscalers)")
    tiny.add_argument("--dest", help="models folder (default: $SOUL_MODELS_DIR)")
    tiny.set_defaults(func=cmd_models_tiny)
    pull = models.add_parser("pull", help="download and verify a model ref into the cache")
    pull.add_argument("ref", help="civitai:<model_version_id>, a tag or an absolute path")
    pull.set_defaults(func=cmd_models_pull)
    convert = models.add_parser("convert", help="a Real-ESRGAN .pth as safetensors (tensors only)")
    convert.add_argument("source", help="the .pth file")
    convert.add_argument("--dest", help="the .safetensors to write (default: models folder)")
    convert.set_defaults(func=cmd_models_convert)

    db = sub.add_parser("db", help="the catalog database").add_subparsers(
        dest="db_command", required=True
    )
    init = db.add_parser("init", help="create $SOUL_DATABASE_URL if missing; apply the schema")
    init.set_defaults(func=cmd_db_init)

    serve = sub.add_parser("serve", help="run the service in the foreground")
    serve.add_argument("--config", default="config/serve.local.yaml", help="Serve config file")
    serve.set_defaults(func=cmd_serve)

    docs = sub.add_parser("docs", help="the generated reference pages").add_subparsers(
        dest="docs_command", required=True
    )
    config_page = docs.add_parser("config", help="rewrite docs/configuration.md from the configs")
    config_page.set_defaults(func=cmd_docs_config)

    from serve_app.bench import add_arguments

    bench = sub.add_parser("bench", help="measure the service; prints a table and writes JSON")
    add_arguments(bench)
    bench.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    from serve_app.local import node_env

    ns = parser().parse_args(argv)
    os.environ.update(node_env(Settings()))  # before Ray is imported: it reads them at import
    return int(ns.func(ns) or 0)


if __name__ == "__main__":
    sys.exit(main())
