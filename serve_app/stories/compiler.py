"""The script compiler: raw text (Fountain or the structured form) → a ``ScriptGraph``.

1. **Read** the text in its form (``fountain.read_fountain``, ``structured.read_structured``)
   into scene drafts, collecting every problem of form (a camera we cannot read, a field).
2. **Resolve** every name through the project's ``AssetDirectory``: cast as characters, the
   environment (a heading's location, then its shorter forms), nature and props. Each asset is
   pinned at its locked version (none yet: the scene compiles, ``require_locked`` stops it
   rendering). A name that resolves to nothing is a problem, with its line, scene and field.
3. **Refuse or answer**: any problem → ``CompileRejected`` (422) listing them all; otherwise the
   scenes, ``S01``, ``S02``… in order, each with ``COMPILER_VERSION`` and its ``graph_hash``.
Compiling is pure: the same text and the same directory give the same graph (and hashes).
"""

from __future__ import annotations

from typing import Literal

from serve_app.stories.assets import AssetDirectory, CompileRejected, Problem, name_key
from serve_app.stories.drafts import Named, SceneDraft
from serve_app.stories.fountain import read_fountain
from serve_app.stories.graph import (
    COMPILER_VERSION,
    SDXL_SIZES,
    AssetPin,
    AssetType,
    Camera,
    DialogueLine,
    SceneNode,
    ScriptGraph,
    Source,
)
from serve_app.stories.structured import read_structured

ScriptForm = Literal["fountain", "structured"]


def detect_form(text: str) -> ScriptForm:
    """The structured form starts with ``{`` or has a top-level ``scenes:``/``pages:`` key."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return "structured"
    lines = {line.split(":", 1)[0] for line in text.splitlines() if ":" in line}
    return "structured" if {"scenes", "pages"} & lines else "fountain"


def compile_script(
    project_id: str,
    text: str,
    directory: AssetDirectory,
    form: ScriptForm | None = None,
) -> ScriptGraph:
    form = form or detect_form(text)
    read = read_fountain(text) if form == "fountain" else read_structured(text)
    problems = list(read.problems)
    if not read.scenes and not problems:
        problems.append(Problem("invalid_form", "the script has no scenes", 1))
    scenes = [
        resolve(project_id, index, draft, directory, problems)
        for index, draft in enumerate(read.scenes)
    ]
    if problems:
        raise CompileRejected(problems)
    return ScriptGraph(project_id=project_id, title=read.title, form=form, scenes=scenes)


def scene_id_of(index: int) -> str:
    return f"S{index + 1:02d}"


class Resolver:
    """Names → pins for one scene, noting each name that resolves to nothing."""

    def __init__(self, directory: AssetDirectory, scene_id: str, problems: list[Problem]) -> None:
        self.directory = directory
        self.scene_id = scene_id
        self.problems = problems

    def pin(self, named: Named, asset_type: AssetType) -> AssetPin | None:
        for candidate in named.candidates():
            if (entry := self.directory.find(candidate, asset_type)) is not None:
                return AssetPin(
                    name=named.name,
                    asset_id=entry.asset_id,
                    asset_type=entry.asset_type,
                    version=entry.locked_version,
                )
        self.problems.append(
            Problem(
                "unresolved_name",
                f"no {asset_type} asset is called {named.name!r}",
                named.line,
                self.scene_id,
                f"{named.path}" if named.path else asset_type,
                named.name,
            )
        )
        return None

    def pins(self, names: list[Named], asset_type: AssetType) -> list[AssetPin]:
        return unique([self.pin(named, asset_type) for named in names])


def unique(pins: list[AssetPin | None]) -> list[AssetPin]:
    """Each asset once, where it first appears (two names may be aliases of one asset)."""
    seen: dict[str, AssetPin] = {}
    for pin in pins:
        if pin is not None:
            seen.setdefault(pin.asset_id, pin)
    return list(seen.values())


def resolve(
    project_id: str,
    index: int,
    draft: SceneDraft,
    directory: AssetDirectory,
    problems: list[Problem],
) -> SceneNode:
    scene_id = scene_id_of(index)
    resolver = Resolver(directory, scene_id, problems)
    speakers = {name_key(named.name): resolver.pin(named, "character") for named in draft.cast}
    cast = unique(list(speakers.values()))
    environment = resolver.pin(draft.environment, "environment") if draft.environment else None
    aspect = draft.aspect or "16:9"
    if aspect not in SDXL_SIZES:
        problems.append(
            Problem(
                "invalid_field",
                f"aspect {aspect!r}: one of {', '.join(SDXL_SIZES)}",
                draft.line,
                scene_id,
            )
        )
        aspect = "16:9"
    if draft.regions is not None and len(draft.regions) != len(cast):
        problems.append(
            Problem(
                "invalid_field",
                f"{len(draft.regions)} regions for a cast of {len(cast)} (speakers included)",
                draft.line,
                scene_id,
                "regions",
            )
        )
    dialogue = [
        DialogueLine(
            character=pin.asset_id,
            extension=line.extension,
            parenthetical=line.parenthetical,
            text=line.text,
        )
        for line in draft.dialogue
        if (pin := speakers.get(name_key(line.speaker.name))) is not None
    ]
    return SceneNode(
        project_id=project_id,
        scene_id=scene_id,
        scene_index=index,
        heading=draft.heading,
        setting=draft.setting,  # Heading.parse spells only these
        time_of_day=draft.time_of_day,
        characters=cast,
        environment=environment,
        nature=resolver.pins(draft.nature, "nature"),
        props=resolver.pins(draft.props, "prop"),
        mood=draft.mood,
        lighting=draft.lighting,
        camera=draft.camera or default_camera(len(cast)),
        action=" ".join(draft.action),
        dialogue=dialogue,
        notes=draft.notes,
        transitions=draft.transitions,
        aspect=aspect,  # checked above
        regions=draft.regions if draft.regions and len(draft.regions) == len(cast) else None,
        compiler_version=COMPILER_VERSION,
        source=Source(line=draft.line, path=draft.path),
    )


def default_camera(cast: int) -> Camera:
    """No camera direction: a medium shot for one or two characters, wide for none or more."""
    return Camera(shot_size="medium" if 1 <= cast <= 2 else "wide", angle="eye-level")
