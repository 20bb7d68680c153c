"""A Python client generated from the service's OpenAPI document, as a user makes one
(``openapi-python-client``), imported so that tests can call the service through it."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any


def generate_client(document: dict[str, Any], folder: Path, package: str) -> tuple[ModuleType, str]:
    """Generate ``package`` into ``folder`` from ``document`` and import it; with the
    generator's output (its warnings name every route or schema it could not use)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "openapi.json"
    spec.write_text(json.dumps(document))
    config = folder / "generator.yaml"
    config.write_text("post_hooks: []\n")  # by default it runs ruff, which may not be on PATH
    command = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(spec),
               "--output-path", str(folder / package), "--meta", "none",
               "--config", str(config)]  # fmt: skip
    generated = subprocess.run(command, capture_output=True, text=True, check=True)
    sys.path.insert(0, str(folder))
    try:
        client = importlib.import_module(package)
    finally:
        sys.path.remove(str(folder))
    return client, generated.stdout + generated.stderr


def endpoint(client: ModuleType, tag: str, name: str) -> ModuleType:
    """The generated module of one route: ``<package>.api.<tag>.<name>``."""
    return importlib.import_module(f"{client.__name__}.api.{tag}.{name}")


def model(client: ModuleType, name: str) -> Any:
    """A generated model class by its schema name, e.g. ``PackOfCues``."""
    return getattr(importlib.import_module(f"{client.__name__}.models"), name)
