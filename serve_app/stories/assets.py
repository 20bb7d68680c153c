"""How a script's names become a project's assets, and what a compile refuses.

The compiler asks an ``AssetDirectory`` (the project's assets, by name and alias) for each name it
meets; ``AssetTable`` is the directory over a list of entries (what the projects facet lists).
Names match case-insensitively with runs of spaces, ``_`` and ``-`` taken as one space, so
``Protagonist_A`` in a YAML story and ``PROTAGONIST A`` as a Fountain cue are the same name.

A compile collects **every** problem before it answers: ``CompileRejected`` (422) lists each
unresolved name with where it is (line, scene, field), in its message and in ``errors``.
``require_locked`` is what a render asks first: a scene pinning an asset without a locked
version is a 409 naming each such asset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from serve_app.errors import Conflict, InvalidRequest
from serve_app.stories.graph import AssetType, SceneNode


def name_key(name: str) -> str:
    """The form names are compared in."""
    return re.sub(r"[\s_-]+", " ", name).strip().casefold()


@dataclass(frozen=True)
class DirectoryEntry:
    """One asset as the directory knows it."""

    asset_id: str
    asset_type: AssetType
    name: str
    aliases: tuple[str, ...] = ()
    locked_version: int | None = None  # the latest locked version, if any


class AssetDirectory(Protocol):
    """A project's assets by name: the compiler's only view of them."""

    def find(self, name: str, asset_type: AssetType) -> DirectoryEntry | None:
        """The asset of this type called ``name`` (or with it as an alias), if any."""
        ...


@dataclass
class AssetTable:
    """An ``AssetDirectory`` over a list of entries. Two assets of one type may not share a
    name or an alias (the directory would have to guess)."""

    entries: Iterable[DirectoryEntry]
    _index: dict[tuple[str, str], DirectoryEntry] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        for entry in self.entries:
            for name in (entry.name, *entry.aliases):
                key = (entry.asset_type, name_key(name))
                other = self._index.get(key)
                if other is not None and other.asset_id != entry.asset_id:
                    raise InvalidRequest(
                        f"{entry.asset_type} name {name!r} is taken by both "
                        f"{other.asset_id} and {entry.asset_id}"
                    )
                self._index[key] = entry

    def find(self, name: str, asset_type: AssetType) -> DirectoryEntry | None:
        return self._index.get((asset_type, name_key(name)))


@dataclass(frozen=True)
class Problem:
    """One reason a compile is refused, and where it is."""

    kind: str  # "unresolved_name" or "invalid_field"
    message: str
    line: int | None = None
    scene: str | None = None
    path: str | None = None
    name: str | None = None

    def where(self) -> str:
        line = f"line {self.line}" if self.line else ""
        scene = f"scene {self.scene}" if self.scene else ""
        return ", ".join(p for p in (line, scene, self.path or "") if p)

    def as_error(self) -> dict[str, Any]:
        """In the shape of ``ErrorBody.errors``: type, loc, msg (and the name, the line)."""
        loc: list[str | int] = ["raw_text"]
        if self.line:
            loc.append(f"line {self.line}")
        if self.scene:
            loc.append(self.scene)
        if self.path:
            loc.append(self.path)
        out: dict[str, Any] = {"type": self.kind, "loc": loc, "msg": self.message}
        if self.name is not None:
            out["name"] = self.name
        if self.line is not None:
            out["line"] = self.line
        return out


class CompileRejected(InvalidRequest):
    """The script does not compile: every problem, each with where it is."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        self.errors = [p.as_error() for p in problems]
        unresolved = [p for p in problems if p.kind == "unresolved_name"]
        head = (
            f"{len(unresolved)} unresolved name(s): "
            + "; ".join(f"{p.name!r} ({p.where()})" for p in unresolved)
            if unresolved
            else ""
        )
        others = "; ".join(f"{p.message} ({p.where()})" for p in problems if p not in unresolved)
        summary = " | ".join(part for part in (head, others) if part)
        super().__init__(f"the script does not compile: {summary}")

    def __reduce__(self) -> tuple[type, tuple[list[Problem]]]:
        """Remade from its problems when it crosses replicas (Ray pickles an error, and the
        default would remake it from its message alone, losing ``errors``)."""
        return type(self), (self.problems,)


class UnlockedAssets(Conflict):
    """A scene pins assets that have no locked version: lock them, then compile again."""

    def __init__(self, scene_id: str, names: list[str]) -> None:
        self.scene_id, self.names = scene_id, names
        super().__init__(
            f"scene {scene_id} uses assets without a locked version: {', '.join(names)}; "
            "lock them and compile the script again"
        )

    def __reduce__(self) -> tuple[type, tuple[str, list[str]]]:
        return type(self), (self.scene_id, self.names)


def unlocked(scene: SceneNode) -> list[str]:
    """Each asset the scene pins without a locked version, as ``name (asset_id)``."""
    return [f"{a.name} ({a.asset_id})" for a in scene.assets if a.version is None]


def require_locked(scene: SceneNode) -> None:
    """A scene renders only from locked assets (409 otherwise)."""
    if missing := unlocked(scene):
        raise UnlockedAssets(scene.scene_id, missing)
