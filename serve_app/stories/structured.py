"""The structured story form (YAML, or JSON, which YAML reads) → scene drafts.

```yaml
title: College Silence
aspect: "16:9"                  # the default of every scene: 16:9, 4:3 or 1:1
scenes:                         # or pages: (a story book: one scene per page, `text` its action)
  - heading: EXT. COLLEGE CAMPUS - MORNING
    environment: College Campus # names of the project's assets (or their aliases)
    characters: [Protagonist_A] # the cast, in order (speakers are added after them)
    nature: [Tree Line Spring]
    props: [Backpack]
    mood: tense
    lighting: morning diffuse
    camera: wide shot, low angle   # or {shot_size: wide, angle: low}
    action: character walks silently through the crowd
    dialogue: [{character: Protagonist_A, parenthetical: quietly, text: "Not today."}]
    notes: [hold on the empty bench]
    regions: [{left: 0.1, top: 0.2, right: 0.5, bottom: 1.0}]  # optional, one per character
```
Every problem (a field, a name) is reported with its path and its line in the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serve_app.stories.assets import Problem
from serve_app.stories.drafts import Heading, Named, SceneDraft, Spoken, parse_camera
from serve_app.stories.graph import Aspect, Camera, Region

MAX_SCENES = 500


class LineForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    character: str = Field(min_length=1, max_length=120)
    text: str = Field(default="", max_length=2000)
    parenthetical: str | None = Field(default=None, max_length=200)
    extension: str | None = Field(default=None, max_length=40)


class SceneForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    heading: str = Field(default="", max_length=200)
    environment: str | None = Field(default=None, max_length=120)
    time_of_day: str | None = Field(default=None, max_length=40)
    characters: list[str] = Field(default_factory=list, max_length=12)
    nature: list[str] = Field(default_factory=list, max_length=12)
    props: list[str] = Field(default_factory=list, max_length=24)
    mood: str | None = Field(default=None, max_length=120)
    lighting: str | None = Field(default=None, max_length=120)
    camera: str | Camera | None = None
    action: str = Field(default="", max_length=4000)
    text: str = Field(default="", max_length=4000, description="A page's text (the action).")
    dialogue: list[LineForm] = Field(default_factory=list, max_length=100)
    notes: list[str] = Field(default_factory=list, max_length=50)
    aspect: Aspect | None = None
    regions: list[Region] | None = None

    @model_validator(mode="after")
    def _regions_fit_the_cast(self) -> SceneForm:
        if self.regions is not None and len(self.regions) != len(self.characters):
            raise ValueError(
                f"regions: {len(self.regions)} given for {len(self.characters)} characters"
            )
        return self


class StoryForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(default="", max_length=200)
    aspect: Aspect = "16:9"
    scenes: list[SceneForm] | None = Field(default=None, max_length=MAX_SCENES)
    pages: list[SceneForm] | None = Field(default=None, max_length=MAX_SCENES)

    @model_validator(mode="after")
    def _one_list(self) -> StoryForm:
        if (self.scenes is None) == (self.pages is None):
            raise ValueError("give either scenes or pages")
        return self


@dataclass
class StructuredRead:
    title: str
    scenes: list[SceneDraft]
    problems: list[Problem]


def line_at(node: yaml.Node | None, path: tuple[Any, ...]) -> int | None:
    """The 1-based line of the value at ``path`` in a composed YAML document (the deepest node
    the path reaches)."""
    line = node.start_mark.line + 1 if node is not None else None
    for step in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            node = node.value[step] if step < len(node.value) else None
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def spelled(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def read_structured(text: str) -> StructuredRead:
    try:
        if any(isinstance(t, yaml.AliasToken | yaml.AnchorToken) for t in yaml.scan(text)):
            problem = Problem("invalid_form", "YAML anchors and aliases are not read", 1)
            return StructuredRead("", [], [problem])
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return StructuredRead("", [], [Problem("invalid_form", f"not YAML or JSON: {exc}", line)])
    try:
        story = StoryForm.model_validate(data)
    except ValidationError as exc:
        refused = [
            Problem(
                "invalid_field",
                err["msg"],
                line_at(root, tuple(err["loc"])),
                path=spelled(tuple(err["loc"])) or None,
            )
            for err in exc.errors()
        ]
        return StructuredRead("", [], refused)
    key = "scenes" if story.scenes is not None else "pages"
    forms = story.scenes if story.scenes is not None else story.pages or []
    problems: list[Problem] = []
    drafts = [draft_of(form, (key, i), root, problems) for i, form in enumerate(forms)]
    for draft in drafts:
        draft.aspect = draft.aspect or story.aspect
    return StructuredRead(story.title, drafts, problems)


def draft_of(
    form: SceneForm, at: tuple[Any, ...], root: yaml.Node | None, problems: list[Problem]
) -> SceneDraft:
    def named(name: str, *path: Any) -> Named:
        return Named(name.strip(), line_at(root, (*at, *path)), spelled((*at, *path)))

    camera = form.camera
    if isinstance(camera, str):
        camera = parse_camera(camera)
        if camera is None:
            where = (*at, "camera")
            problems.append(
                Problem(
                    "invalid_field",
                    f"camera {form.camera!r}: name a shot size or angle",
                    line_at(root, where),
                    path=spelled(where),
                )
            )
    heading = Heading.parse(form.heading) if form.heading.strip() else None
    environment = named(form.environment, "environment") if form.environment else None
    if environment is None and heading is not None and heading.setting and heading.location:
        spot = named(heading.location, "heading")
        environment = Named(spot.name, spot.line, spot.path, tuple(heading.place_names()))
    draft = SceneDraft(
        line=line_at(root, at),
        path=spelled(at),
        heading=form.heading,
        setting=heading.setting if heading else "",
        time_of_day=form.time_of_day or (heading.time_of_day if heading else None),
        environment=environment,
        nature=[named(n, "nature", i) for i, n in enumerate(form.nature)],
        props=[named(n, "props", i) for i, n in enumerate(form.props)],
        mood=form.mood,
        lighting=form.lighting,
        camera=camera,
        action=[part for part in (form.action.strip(), form.text.strip()) if part],
        notes=list(form.notes),
        aspect=form.aspect,
        regions=form.regions,
    )
    for i, name in enumerate(form.characters):
        draft.add_cast(named(name, "characters", i))
    for i, line in enumerate(form.dialogue):
        speaker = named(line.character, "dialogue", i, "character")
        draft.add_cast(speaker)
        draft.dialogue.append(Spoken(speaker, line.text, line.extension, line.parenthetical))
    return draft
