"""Fountain screenplays → scene drafts.

The text is parsed by ``fountain-py`` (typed, every element with its source line). Then:
- a **scene heading** starts a scene: ``INT.``/``EXT.``/``INT./EXT.``/``I/E``/``EST.`` or a
  forced ``.HEADING``; its location names the environment, its last ``- PART`` the time of day;
- a **character cue** adds the speaker to the cast (order of first appearance), without its
  extensions (``(V.O.)``, ``(CONT'D)``), which are kept with the line; parentheticals and
  dialogue (dual dialogue too) become the scene's dialogue;
- **action** lines become the scene's action; **transitions** stay with the scene they are in
  (``FADE IN:`` before the first heading goes with the first scene);
- **notes** ``[[Key: value]]`` are directions (``drafts.NOTE_KEYS``); before the first heading
  they are the whole script's defaults. Notes are read from the text itself (outside
  ``/* boneyards */``), inline ones included, since the parser drops those inside action.
- boneyards, sections and page breaks are left out; synopses and centered text are notes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fountain.elements import ElementType, FountainElement
from fountain.parser import FountainParser

from serve_app.stories.assets import Problem
from serve_app.stories.drafts import (
    Heading,
    Named,
    SceneDraft,
    Spoken,
    parse_camera,
    split_list,
    split_note,
)

NOTE = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)
BONEYARD = re.compile(r"/\*.*?\*/", re.DOTALL)


@dataclass
class FountainRead:
    title: str
    scenes: list[SceneDraft]
    problems: list[Problem] = field(default_factory=list)


def notes_of(text: str) -> list[tuple[int, str]]:
    """Every ``[[note]]`` outside boneyards, with the line it starts on."""
    blanked = BONEYARD.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)
    return [
        (blanked.count("\n", 0, m.start()) + 1, m.group(1).strip()) for m in NOTE.finditer(blanked)
    ]


def extension_of(element: FountainElement) -> str | None:
    """``V.O.) (CONT'D`` as the parser leaves two extensions → ``V.O., CONT'D``."""
    raw = element.metadata.get("extension")
    if not isinstance(raw, str) or not raw.strip():
        return None
    return ", ".join(p.strip() for p in re.split(r"\)\s*\(", raw) if p.strip())


def direct(scene: SceneDraft, note: str, line: int, problems: list[Problem]) -> None:
    """Apply a note to a scene (or to the script's defaults): each of its lines that is a
    direction; the rest is kept as one note."""
    kept = []
    for offset, text in enumerate(note.splitlines()):
        split = split_note(text)
        if split is None:
            kept.append(text.strip())
        else:
            apply(scene, *split, line + offset, problems)
    if " ".join(kept).strip():
        scene.notes.append(" ".join(" ".join(kept).split()))


def apply(scene: SceneDraft, key: str, value: str, line: int, problems: list[Problem]) -> None:
    if key == "camera":
        camera = parse_camera(value)
        if camera is None:
            problems.append(
                Problem("invalid_field", f"camera {value!r}: name a shot size or angle", line)
            )
        scene.camera = camera or scene.camera
    elif key in ("mood", "lighting", "aspect"):
        setattr(scene, key, value)
    elif key == "environment":
        scene.environment = Named(value, line)
    else:  # props, nature, cast: lists of names
        for name in split_list(value):
            named = Named(name, line)
            if key == "cast":
                scene.add_cast(named)
            else:
                getattr(scene, key).append(named)


def read_fountain(text: str) -> FountainRead:
    document = FountainParser().parse(text)
    problems = [
        Problem("invalid_fountain", issue.message, issue.line_number)
        for issue in document.issues
        if issue.severity == "error"
    ]
    defaults = SceneDraft(line=0)
    scenes: list[SceneDraft] = []
    pending: list[str] = []  # transitions before the first scene

    def scene_at(element: FountainElement) -> SceneDraft | None:
        if scenes:
            return scenes[-1]
        problems.append(
            Problem(
                "invalid_fountain",
                f"{element.type.value} before the first scene heading: start a scene with "
                "INT., EXT. or a forced .HEADING",
                element.line_number,
            )
        )
        return None

    for index, element in enumerate(document.elements):
        kind = element.type
        if kind is ElementType.SCENE_HEADING:
            scenes.append(open_scene(element, pending))
            pending = []
        elif kind is ElementType.TRANSITION:
            (scenes[-1].transitions if scenes else pending).append(element.text)
        elif kind in (ElementType.ACTION, ElementType.LYRICS):
            # a line holding only an inline note is an empty action: nothing to place
            if element.text.strip() and (scene := scene_at(element)) is not None:
                scene.action.append(" ".join(element.text.split()))
        elif kind in (ElementType.SYNOPSIS, ElementType.CENTERED):
            if (scene := scene_at(element)) is not None:
                scene.notes.append(element.text.strip())
        elif kind in (ElementType.CHARACTER, ElementType.DUAL_DIALOGUE) and (
            scene := scene_at(element)
        ):
            for column in columns(document.elements, index):
                speak(scene, column)
    # dialogue is walked through the cues (``columns``): DIALOGUE and PARENTHETICAL are skipped
    # here, as are NOTE (read from the text below), BONEYARD, SECTION and PAGE_BREAK.
    heading_lines = [scene.line or 0 for scene in scenes]
    for line, note in notes_of(text):
        owners = [s for s, start in zip(scenes, heading_lines, strict=True) if start <= line]
        direct(owners[-1] if owners else defaults, note, line, problems)
    for scene in scenes:
        scene.cast.sort(key=lambda named: named.line or 0)  # notes are read after the cues
        inherit(scene, defaults)
    return FountainRead(str(document.metadata.get("title", "")), scenes, problems)


def open_scene(element: FountainElement, pending: list[str]) -> SceneDraft:
    heading = Heading.parse(element.text)
    environment = (
        Named(heading.location, element.line_number, tries=tuple(heading.place_names()))
        if heading.location
        else None
    )
    return SceneDraft(
        line=element.line_number,
        heading=element.text.strip(),
        setting=heading.setting,
        time_of_day=heading.time_of_day,
        environment=environment,
        transitions=list(pending),
    )


def inherit(scene: SceneDraft, defaults: SceneDraft) -> None:
    """What a scene does not say, the script's notes before its first heading say."""
    scene.mood = scene.mood or defaults.mood
    scene.lighting = scene.lighting or defaults.lighting
    scene.camera = scene.camera or defaults.camera
    scene.aspect = scene.aspect or defaults.aspect
    scene.environment = scene.environment or defaults.environment
    for named in defaults.cast:
        scene.add_cast(named)


def columns(elements: list[FountainElement], index: int) -> list[list[FountainElement]]:
    """The cue at ``index`` and the parentheticals and dialogue after it; both columns of dual
    dialogue."""
    cue = elements[index]
    if cue.type is ElementType.DUAL_DIALOGUE:
        return list(cue.dual_dialogue_columns())
    spoken: list[FountainElement] = [cue]
    for element in elements[index + 1 :]:
        if element.type not in (ElementType.DIALOGUE, ElementType.PARENTHETICAL):
            break
        spoken.append(element)
    return [spoken]


def speak(scene: SceneDraft, column: list[FountainElement]) -> None:
    cue, *lines = column
    speaker = Named(cue.text.strip(), cue.line_number)
    scene.add_cast(speaker)
    extension = extension_of(cue)
    parenthetical: str | None = None
    for element in lines:
        if element.type is ElementType.PARENTHETICAL:
            if parenthetical is not None:  # two in a row: the first stands alone
                scene.dialogue.append(Spoken(speaker, "", extension, parenthetical))
            parenthetical = element.text.strip().removeprefix("(").removesuffix(")").strip()
            continue
        scene.dialogue.append(Spoken(speaker, element.text.strip(), extension, parenthetical))
        parenthetical = None
    if parenthetical is not None:
        scene.dialogue.append(Spoken(speaker, "", extension, parenthetical))
