"""What a print is: the request (``PrintOptions``), the rules it is checked against
(``PrintsConfig``, ``config/prints.yaml``) and where the file is kept.

A print lives beside its variant: ``<variant stem>.print.<W>x<H>[.<options>].<ext>``, the
options being ``contain`` (padded, not cropped), ``cutout`` (background removed) and the chain
when the request named one. The key says everything the answer lists, so a variant's prints are
found by listing its stem: no catalog row, removed with the variant's objects, swept with them.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve_app.prints.chain import AnyStep, ChainName
from serve_app.settings import config_file

SIZES = {"portrait": (2048, 2048), "scene": (3000, 2000)}
KEY = re.compile(
    r"\.print\.(?P<w>\d+)x(?P<h>\d+)(?P<contain>\.contain)?(?P<cutout>\.cutout)?"
    r"(?:\.(?P<chain>[a-z0-9]{1,32}))?\.(?P<ext>png|jpeg)$"
)


class PrintOptions(BaseModel):
    """A print version of a variant's still."""

    model_config = ConfigDict(extra="forbid")

    size: str = Field(
        default="portrait",
        pattern=r"^(portrait|scene|[1-9][0-9]{0,4}x[1-9][0-9]{0,4})$",
        description="portrait (2048x2048), scene (3000x2000) or WxH within the service's bounds.",
    )
    fit: Literal["cover", "contain"] = Field(
        default="cover", description="cover: fill and crop; contain: fit whole and pad."
    )
    background: Literal["keep", "remove"] = Field(
        default="keep", description="remove: the subject cut out on transparency (png only)."
    )
    format: Literal["png", "jpeg"] = Field(default="png", description="jpeg is written at q95.")
    chain: ChainName | None = Field(
        default=None, description="A chain the configuration names; none: the soul's own."
    )

    @field_validator("format")
    @classmethod
    def alpha_needs_png(cls, fmt: str, info: object) -> str:
        data = getattr(info, "data", {})
        if fmt == "jpeg" and data.get("background") == "remove":
            raise ValueError("background: remove needs png (jpeg has no transparency)")
        return fmt

    @property
    def pixels(self) -> tuple[int, int]:
        """(width, height)."""
        if self.size in SIZES:
            return SIZES[self.size]
        width, height = self.size.split("x")
        return int(width), int(height)

    def key(self, stem: str) -> str:
        width, height = self.pixels
        contain = "contain" if self.fit == "contain" else ""
        cutout = "cutout" if self.background == "remove" else ""
        options = [option for option in (contain, cutout, self.chain or "") if option]
        return ".".join([f"{stem}.print.{width}x{height}", *options, self.format])


def options_of(key: str) -> PrintOptions | None:
    """The options a print's key was written for (None: not a print's key)."""
    found = KEY.search(key)
    if found is None:
        return None
    return PrintOptions(
        size=f"{found['w']}x{found['h']}",
        fit="contain" if found["contain"] else "cover",
        background="remove" if found["cutout"] else "keep",
        format=found["ext"],
        chain=found["chain"],
    )


class PrintsConfig(BaseModel):
    """``config/prints.yaml``: bounds of a print, its file's rules, the chains."""

    model_config = ConfigDict(extra="forbid")

    min_side: int = Field(default=256, ge=16, description="Least width or height of a WxH size.")
    max_side: int = Field(default=6000, le=20000, description="Largest width or height.")
    dpi: int = Field(default=300, ge=72, le=1200, description="Written into every print.")
    max_bytes: int = Field(default=5_000_000, ge=100_000, description="Largest print file.")
    jpeg_quality: int = Field(default=95, ge=50, le=100, description="A jpeg's first quality.")
    matte_model: str | None = Field(
        default=None,
        description="U²-Net-family ONNX model (tag or absolute path) that removes backgrounds; "
        "none: OpenCV's GrabCut.",
    )
    chains: dict[ChainName, list[AnyStep]] = Field(description="Named chains of steps.")
    souls: dict[str, ChainName] = Field(
        default_factory=dict, description="The chain of each soul's style; others: default."
    )

    def chain_of(self, soul_id: str, named: str | None) -> list[AnyStep]:
        return self.chains[named or self.souls.get(soul_id, "default")]


@cache
def load_prints(path: str | Path = "config/prints.yaml") -> PrintsConfig:
    config = PrintsConfig.model_validate(yaml.safe_load(config_file(path).read_text()))
    if "default" not in config.chains or not set(config.souls.values()) <= set(config.chains):
        raise ValueError(f"{path}: a 'default' chain, and every soul's chain, must be defined")
    return config
