"""Souls shipped as data (config/souls.yaml)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from serve_app.schemas import SoulSpec
from serve_app.settings import config_file


class SoulsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    souls: list[SoulSpec]


def load_souls(path: str | Path) -> list[SoulSpec]:
    return SoulsFile.model_validate(yaml.safe_load(config_file(path).read_text())).souls
