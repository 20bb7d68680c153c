"""The script compiler: a Fountain screenplay and a structured story compile to the scene graphs
in tests/data/storyboards (golden files); hashes are stable across processes; an unresolved
name rejects the compile with every name and where it is; an unlocked asset stops a render."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serve_app.api import errors as api_errors
from serve_app.errors import InvalidRequest
from serve_app.stories.assets import (
    AssetTable,
    CompileRejected,
    DirectoryEntry,
    UnlockedAssets,
    require_locked,
    unlocked,
)
from serve_app.stories.compiler import compile_script, detect_form
from serve_app.stories.drafts import Heading, parse_camera
from serve_app.stories.graph import SceneNode, ScriptGraph
from tests.unit.storyboard_assets import directory

DATA = Path(__file__).resolve().parents[1] / "data" / "storyboards"
GOLDEN = [
    ("lighthouse.fountain", "lighthouse.graph.json", "fountain"),
    ("harbor_story.yaml", "harbor_story.graph.json", "structured"),
]


@pytest.mark.parametrize(("script", "graph", "form"), GOLDEN)
def test_scripts_compile_to_the_golden_scene_graphs(script: str, graph: str, form: str) -> None:
    text = (DATA / script).read_text(encoding="utf-8")
    assert detect_form(text) == form
    compiled = compile_script("P1", text, directory())
    expected = json.loads((DATA / graph).read_text(encoding="utf-8"))
    assert compiled.model_dump(mode="json") == expected


def test_the_fountain_script_reads_every_element_where_it_belongs() -> None:
    text = (DATA / "lighthouse.fountain").read_text(encoding="utf-8")
    cliff, lamp_room, harbor = compile_script("P1", text, directory()).scenes
    # the heading: setting, location → environment, time of day
    assert (cliff.setting, cliff.time_of_day, cliff.environment) == (
        "EXT",
        "DUSK",
        cliff.environment,
    )
    assert cliff.environment is not None and cliff.environment.pin == "ENV_CLIFF@v1"
    # "LIGHTHOUSE - LAMP ROOM" has no asset of its own: its shorter form "LIGHTHOUSE" does
    assert lamp_room.environment is not None and lamp_room.environment.pin == "ENV_LIGHTHOUSE@v2"
    assert harbor.setting == "EST" and harbor.characters == []
    # cues → cast in order of first appearance; a [[Cast: ...]] note before the cues comes first
    assert [c.asset_id for c in lamp_room.characters] == [
        "CHAR_KEEPER", "CHAR_MARCO", "CHAR_NOVA", "CHAR_MCCLANE",
    ]  # fmt: skip
    # extensions stay with the line, parentheticals without their parentheses; dual dialogue
    assert [(d.character, d.extension, d.parenthetical) for d in cliff.dialogue] == [
        ("CHAR_NOVA", None, "shouting over the wind"),
        ("CHAR_MARCO", "O.S.", None),
    ]
    assert lamp_room.dialogue[1].text == "Then who?"  # the ^ column of the dual dialogue
    assert lamp_room.dialogue[2].extension == "V.O., CONT'D"
    # notes: directions (inline ones too), the rest kept; the boneyard's note is not read
    assert [p.pin for p in cliff.props] == ["PROP_LANTERN@v4"]
    assert (cliff.mood, cliff.lighting, cliff.camera.phrase()) == (
        "tense", "golden hour backlight", "wide shot, low angle",
    )  # fmt: skip
    assert "Umbrella" not in json.dumps(cliff.model_dump(mode="json"))
    # script-wide notes before the first heading are every scene's defaults
    assert lamp_room.lighting == harbor.lighting == "overcast"
    assert cliff.transitions == ["FADE IN:", "CUT TO:"] and harbor.notes == ["THE END"]
    assert cliff.source.line == 13 and lamp_room.source.line == 39


def test_graph_hashes_are_the_same_in_another_process() -> None:
    text = (DATA / "lighthouse.fountain").read_text(encoding="utf-8")
    here = compile_script("P1", text, directory())
    program = (
        "import sys\n"
        "from serve_app.stories.compiler import compile_script\n"
        "from tests.unit.storyboard_assets import directory\n"
        "g = compile_script('P1', sys.stdin.read(), directory())\n"
        "print(g.graph_hash, *[s.graph_hash for s in g.scenes])\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", program],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    ).stdout.split()
    assert out == [here.graph_hash, *[s.graph_hash for s in here.scenes]]


def test_a_hash_covers_the_scene_not_where_it_sits_in_the_text() -> None:
    text = (DATA / "lighthouse.fountain").read_text(encoding="utf-8")
    first = compile_script("P1", text, directory()).scenes[0]
    moved = compile_script("P1", "\n\n\n" + text, directory()).scenes[0]
    assert moved.source.line == first.source.line + 3
    assert moved.graph_hash == first.graph_hash
    other_mood = compile_script("P1", text.replace("Mood: tense", "Mood: calm"), directory())
    assert other_mood.scenes[0].graph_hash != first.graph_hash


def test_a_dumped_graph_reads_back_and_a_tampered_one_does_not() -> None:
    graph = compile_script("P1", (DATA / "harbor_story.yaml").read_text(), directory())
    dumped = graph.model_dump(mode="json")
    assert ScriptGraph.model_validate(dumped) == graph
    scene = dumped["scenes"][0]
    assert SceneNode.model_validate(scene).graph_hash == scene["graph_hash"]
    with pytest.raises(ValueError, match="does not match"):
        SceneNode.model_validate({**scene, "mood": "grim"})


FOUNTAIN_WITH_UNKNOWNS = """\
INT. KITCHEN - DAY

[[Props: Lantern, Teapot]]

GHOST
Boo.

NOVA
Who are you?

EXT. MOON - NIGHT

[[Camera: sideways wobble]]

STRANGER
Hello.
"""


def test_every_unresolved_name_is_listed_with_where_it_is() -> None:
    with pytest.raises(CompileRejected) as caught:
        compile_script("P1", FOUNTAIN_WITH_UNKNOWNS, directory())
    rejected = caught.value
    assert rejected.status_code == 422
    found = {(p.name, p.line, p.scene) for p in rejected.problems if p.kind == "unresolved_name"}
    assert found == {
        ("KITCHEN", 1, "S01"),
        ("Teapot", 3, "S01"),
        ("GHOST", 5, "S01"),
        ("MOON", 11, "S02"),
        ("STRANGER", 15, "S02"),
    }
    message = str(rejected)
    for name in ("KITCHEN", "Teapot", "GHOST", "MOON", "STRANGER"):
        assert repr(name) in message
    assert "line 15, scene S02" in message
    camera = [p for p in rejected.problems if p.kind == "invalid_field"]
    assert [(p.line, p.message) for p in camera] == [
        (13, "camera 'sideways wobble': name a shot size or angle")
    ]
    assert all({"type", "loc", "msg"} <= set(error) for error in rejected.errors or [])


def test_the_refusals_keep_their_problems_across_replicas() -> None:
    """Ray pickles an error from the Catalog to the Ingress: the 422 still lists each name,
    and the 409 still names its assets."""
    with pytest.raises(CompileRejected) as caught:
        compile_script("P1", FOUNTAIN_WITH_UNKNOWNS, directory())
    remade = pickle.loads(pickle.dumps(caught.value))
    assert remade.errors == caught.value.errors and str(remade) == str(caught.value)
    refused = UnlockedAssets("scn_1", ["Nova (ast_1)"])
    again = pickle.loads(pickle.dumps(refused))
    assert (again.names, str(again)) == (["Nova (ast_1)"], str(refused))


def test_the_structured_form_names_the_path_and_line_of_each_unknown() -> None:
    story = (
        "title: t\n"
        "scenes:\n"
        "  - environment: Harbor\n"
        "    characters: [Nova, Ghost]\n"
        "    dialogue:\n"
        "      - {character: Stranger, text: hi}\n"
    )
    with pytest.raises(CompileRejected) as caught:
        compile_script("P1", story, directory())
    found = {(p.name, p.line, p.path) for p in caught.value.problems}
    assert found == {
        ("Ghost", 4, "scenes[0].characters[1]"),
        ("Stranger", 6, "scenes[0].dialogue[0].character"),
    }


def test_structured_form_errors_name_the_field_and_line() -> None:
    story = "scenes:\n  - environment: Harbor\n    aspect: '21:9'\n    colour: red\n"
    with pytest.raises(CompileRejected) as caught:
        compile_script("P1", story, directory())
    found = {(p.path, p.line) for p in caught.value.problems}
    assert found == {("scenes[0].aspect", 3), ("scenes[0].colour", 4)}
    for bad in ("scenes: [", "a: &x 1\nscenes: [*x]", "{}", "pages: []\nscenes: []"):
        with pytest.raises(CompileRejected):
            compile_script("P1", bad, directory(), form="structured")


def test_text_before_the_first_heading_and_an_empty_script_are_refused() -> None:
    with pytest.raises(CompileRejected, match="before the first scene heading"):
        compile_script("P1", "Nova walks in.\n\nINT. LIGHTHOUSE - DAY\n", directory())
    notes_first = "[[Mood: calm]] [[Aspect: 4:3]]\n\nEXT. HARBOR - DAY\n\nBoats.\n"
    (scene,) = compile_script("P1", notes_first, directory()).scenes
    assert (scene.mood, scene.aspect, scene.size) == ("calm", "4:3", (1152, 896))
    with pytest.raises(CompileRejected, match="no scenes"):
        compile_script("P1", "Title: Nothing\n\n", directory())


def test_names_match_aliases_case_and_separators() -> None:
    table = directory()
    assert table.find("nova_reyes", "character") == table.find("NOVA REYES", "character")
    assert table.find("Nova", "environment") is None
    with pytest.raises(InvalidRequest, match="taken by both"):
        AssetTable(
            [
                DirectoryEntry("A", "prop", "Rope"),
                DirectoryEntry("B", "prop", "Coil", aliases=("rope",)),
            ]
        )


def test_a_scene_with_an_unlocked_asset_cannot_render() -> None:
    text = (DATA / "lighthouse.fountain").read_text(encoding="utf-8")
    cliff, lamp_room, _ = compile_script("P1", text, directory()).scenes
    require_locked(cliff)
    assert unlocked(lamp_room) == ["Old Keeper (CHAR_KEEPER)"]
    with pytest.raises(UnlockedAssets) as caught:
        require_locked(lamp_room)
    assert caught.value.status_code == 409 and "Old Keeper" in str(caught.value)


@pytest.mark.parametrize(
    ("words", "shot", "angle"),
    [
        ("wide shot, low angle", "wide", "low"),
        ("ECU", "extreme-close-up", "eye-level"),
        ("close-up", "close-up", "eye-level"),
        ("Medium close up from a bird's eye view", "medium-close-up", "overhead"),
        ("establishing", "extreme-wide", "eye-level"),
        ("dutch angle", "medium", "dutch"),
    ],
)
def test_camera_words(words: str, shot: str, angle: str) -> None:
    camera = parse_camera(words)
    assert camera is not None and (camera.shot_size, camera.angle) == (shot, angle)


def test_headings() -> None:
    assert Heading.parse("INT./EXT. CAR - MOVING - DAY") == Heading(
        "INT/EXT", "CAR - MOVING", "DAY"
    )
    assert Heading.parse("I/E HALLWAY - CONTINUOUS") == Heading("INT/EXT", "HALLWAY", "CONTINUOUS")
    assert Heading.parse("FLASHBACK - THE HARBOR") == Heading("", "FLASHBACK - THE HARBOR", None)
    assert Heading.parse("INT. A - B - C").place_names() == ["A - B - C", "A - B", "A"]


def test_the_error_answer_lists_the_problems() -> None:
    app = FastAPI()
    api_errors.install(app)

    @app.get("/compile")
    async def compile_route() -> None:
        compile_script("P1", FOUNTAIN_WITH_UNKNOWNS, directory())

    answer = TestClient(app).get("/compile", headers={"X-Request-ID": "r1"})
    assert answer.status_code == 422
    body = answer.json()
    assert body["request_id"] == "r1" and "GHOST" in body["detail"]
    names = {e.get("name") for e in body["errors"] if e["type"] == "unresolved_name"}
    assert names == {"KITCHEN", "Teapot", "GHOST", "MOON", "STRANGER"}


def test_a_speaker_written_another_way_than_in_the_cast_keeps_their_lines() -> None:
    story = (
        "scenes:\n"
        "  - environment: Harbor\n"
        "    characters: [nova_reyes]\n"
        "    dialogue: [{character: NOVA REYES, text: Hello.}, {character: Nova, text: Me.}]\n"
    )
    (scene,) = compile_script("P1", story, directory()).scenes
    assert [c.asset_id for c in scene.characters] == ["CHAR_NOVA"]
    assert [(d.character, d.text) for d in scene.dialogue] == [
        ("CHAR_NOVA", "Hello."),
        ("CHAR_NOVA", "Me."),
    ]
