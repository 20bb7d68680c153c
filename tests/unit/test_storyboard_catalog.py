"""The storyboards facet over a real store, on both backends: a script compiles against its
project's assets (names and aliases, latest locked versions) into scenes that are stored with
their graph and hash; an unresolved name writes nothing; a recompile writes the same scenes;
validation names unlocked assets; another client's project is not found."""

from __future__ import annotations

import pytest

from serve_app.catalog.asset_search import AssetSearch
from serve_app.catalog.projects import Projects
from serve_app.catalog.scene_pins import AssetPinned
from serve_app.catalog.stories import Stories
from serve_app.ids import now_ms
from serve_app.projects.models import AssetChanges, AssetSpec, ProjectDraft, ProjectNotFound
from serve_app.storage.tables import CatalogStore
from serve_app.stories.assets import CompileRejected
from serve_app.stories.records import ScriptDraft, ScriptNotFound
from tests.support import run
from tests.unit.test_facets import alone, postgres_url, store  # noqa: F401 (fixtures)

ME, OTHER = "client-a", "client-b"
SCRIPT = """Title: The Keeper

EXT. LIGHTHOUSE - NIGHT

[[Camera: wide shot, low angle]]
[[Props: Lantern]]

Nova climbs the stairs.

NOVA
Is anyone there?

MARCO (O.S.)
Only the wind.
"""


class Storyboards(Projects, AssetSearch, Stories):
    """The facets as the Catalog mixes them."""


@pytest.fixture
def facet(store: CatalogStore) -> Storyboards:  # noqa: F811 (test_facets' fixture)
    return alone(Storyboards, store)


def asset(
    facet: Storyboards, pid: str, kind: str, name: str, lock: bool = True, **more: object
) -> str:
    spec = AssetSpec.model_validate(
        {"asset_type": kind, "name": name, "canonical_prompt": f"{name.lower()} prompt", **more}
    )
    made, _ = run(facet.create_asset(ME, pid, spec, ["front"], None))
    if lock:
        run(facet.lock_asset(ME, pid, made.asset_id, None))
    return made.asset_id


def project(facet: Storyboards) -> str:
    made = run(facet.create_project(ME, ProjectDraft(name="Keeper", style_anchor_prompt="ink")))
    return made.project_id


def test_a_script_compiles_to_stored_scenes_pinned_at_locked_versions(facet: Storyboards) -> None:
    pid = project(facet)
    nova = asset(facet, pid, "character", "Nova")
    marco = asset(facet, pid, "character", "Marco Polo", metadata={"aliases": ["Marco"]})
    house = asset(facet, pid, "environment", "Lighthouse")
    lantern = asset(facet, pid, "prop", "Lantern")
    script = run(facet.create_script(ME, pid, ScriptDraft(title="Keeper", raw_text=SCRIPT)))
    assert script.status == "draft" and script.scene_ids == []
    compiled, scenes = run(facet.compile_script(ME, pid, script.script_id))
    assert compiled.status == "compiled" and compiled.form == "fountain"
    assert compiled.compiler_version == "storyboard-compiler/1"
    (scene,) = scenes
    assert scene.scene_id == compiled.scene_ids[0] == f"scn_{script.script_id[4:]}_001"
    assert scene.graph.scene_id == scene.scene_id and scene.position == 0
    assert [c.pin for c in scene.graph.characters] == [f"{nova}@v1", f"{marco}@v1"]
    assert scene.graph.environment is not None and scene.graph.environment.asset_id == house
    assert [p.pin for p in scene.graph.props] == [f"{lantern}@v1"]
    stored = run(facet.get_scene(ME, pid, scene.scene_id))
    assert stored.graph == scene.graph and stored.graph.graph_hash == scene.graph.graph_hash
    again, scenes_again = run(facet.compile_script(ME, pid, script.script_id))
    assert again.graph_hash == compiled.graph_hash
    assert scenes_again[0].graph.graph_hash == scene.graph.graph_hash
    assert scenes_again[0].position == 0
    _, blockers = run(facet.validate_scene(ME, pid, scene.scene_id))
    assert blockers == []
    _, registry, style = run(facet.scene_assets(ME, pid, scene.scene_id))
    assert sorted(registry) == sorted(p.pin for p in scene.graph.assets if p.pin)
    assert registry[f"{nova}@v1"].canonical_prompt == "nova prompt" and style.style_anchor_prompt
    kinds = [e.kind for e in run(facet.project_events(ME, pid, "", 100))]
    assert kinds[-3:] == ["script.created", "script.compiled", "script.compiled"]


def test_an_unresolved_name_lists_every_one_and_writes_nothing(facet: Storyboards) -> None:
    pid = project(facet)
    asset(facet, pid, "character", "Nova")
    script = run(facet.create_script(ME, pid, ScriptDraft(raw_text=SCRIPT)))
    with pytest.raises(CompileRejected) as refused:
        run(facet.compile_script(ME, pid, script.script_id))
    names = {e["name"] for e in refused.value.errors}
    assert names == {"MARCO", "LIGHTHOUSE", "Lantern"}
    assert all(e["line"] for e in refused.value.errors)
    assert run(facet.get_script(ME, pid, script.script_id)).status == "draft"
    assert run(facet.store.project_scenes(pid)) == []


def test_validation_names_an_unlocked_asset_and_one_unlocked_since(facet: Storyboards) -> None:
    pid = project(facet)
    asset(facet, pid, "character", "Nova", lock=False)
    marco = asset(facet, pid, "character", "Marco")
    asset(facet, pid, "environment", "Lighthouse")
    asset(facet, pid, "prop", "Lantern")
    script = run(facet.create_script(ME, pid, ScriptDraft(raw_text=SCRIPT)))
    _, (scene,) = run(facet.compile_script(ME, pid, script.script_id))
    unlocked_since(facet, pid, marco, 1)
    _, blockers = run(facet.validate_scene(ME, pid, scene.scene_id))
    assert [(b.kind, b.name) for b in blockers] == [
        ("unlocked_asset", "NOVA"),
        ("unknown_pin", "MARCO"),
    ]


def unlocked_since(facet: Storyboards, pid: str, asset_id: str, version: int) -> None:
    """The version unlocked under the scenes that pin it, as an unlock that raced their compile
    leaves it (``:unlock`` itself refuses a pinned version)."""
    current = run(facet.store.get_asset_version(pid, asset_id, version))
    assert current is not None
    opened = current.model_copy(update={"is_locked": False, "updated_at_ts": now_ms() + 1})
    assert run(facet.store.update_asset_version(opened, current.updated_at_ts, unlocking=True))


def test_unlocking_a_pinned_version_names_its_scenes_and_writes_nothing(
    facet: Storyboards,
) -> None:
    pid = project(facet)
    for kind, name in [("character", "Nova"), ("environment", "Lighthouse"), ("prop", "Lantern")]:
        asset(facet, pid, kind, name)
    marco = asset(facet, pid, "character", "Marco")
    first = run(facet.create_script(ME, pid, ScriptDraft(raw_text=SCRIPT)))
    second = run(facet.create_script(ME, pid, ScriptDraft(raw_text=SCRIPT)))
    _, (one,) = run(facet.compile_script(ME, pid, first.script_id))
    _, (two,) = run(facet.compile_script(ME, pid, second.script_id))
    events = run(facet.project_events(ME, pid, "", 100))
    with pytest.raises(AssetPinned) as refused:
        run(facet.unlock_asset(ME, pid, marco, None))
    assert refused.value.status_code == 409
    assert f"scenes {', '.join(sorted([one.scene_id, two.scene_id]))}" in str(refused.value)
    assert [e["loc"][1] for e in refused.value.errors or []] == sorted([one.scene_id, two.scene_id])
    assert run(facet.get_asset_version(ME, pid, marco, 1)).is_locked
    assert run(facet.project_events(ME, pid, "", 100)) == events  # nothing written
    run(facet.new_asset_version(ME, pid, marco, AssetChanges(change_note="older"), None))
    run(facet.lock_asset(ME, pid, marco, 2))
    run(facet.compile_script(ME, pid, first.script_id))  # pins Marco@v2 now
    with pytest.raises(AssetPinned, match=two.scene_id):  # the second still pins v1
        run(facet.unlock_asset(ME, pid, marco, 1))
    run(facet.compile_script(ME, pid, second.script_id))
    assert not run(facet.unlock_asset(ME, pid, marco, 1)).is_locked
    with pytest.raises(AssetPinned, match=f"{one.scene_id}, {two.scene_id}"):
        run(facet.unlock_asset(ME, pid, marco, 2))


def test_another_clients_project_is_not_found(facet: Storyboards) -> None:
    pid = project(facet)
    script = run(facet.create_script(ME, pid, ScriptDraft(raw_text=SCRIPT)))
    for call in (
        facet.create_script(OTHER, pid, ScriptDraft(raw_text=SCRIPT)),
        facet.get_script(OTHER, pid, script.script_id),
        facet.compile_script(OTHER, pid, script.script_id),
        facet.get_scene(OTHER, pid, "scn_" + "0" * 26 + "_001"),
        facet.validate_scene(OTHER, pid, "scn_" + "0" * 26 + "_001"),
    ):
        with pytest.raises(ProjectNotFound):
            run(call)
    with pytest.raises(ScriptNotFound):
        run(facet.get_script(ME, pid, "scr_" + "0" * 26))
