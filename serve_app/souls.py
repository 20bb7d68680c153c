"""Souls shipped as data (config/souls.yaml)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel

from serve_app.schemas import SoulSpec

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


class SoulsFile(BaseModel):
    souls: list[SoulSpec]


def load_souls(path: str | Path) -> list[SoulSpec]:
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = CONFIG_DIR / path.name
    return SoulsFile.model_validate(yaml.safe_load(path.read_text())).souls
