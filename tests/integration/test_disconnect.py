"""A client that gives up mid-miss fails no one who joined its render (Serve cancels a departed
request and every handle call made in its context; the shared render belongs to none)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from shared_graph import souls_of
from soul_client import API_KEY, Graph, tenant

pytestmark = pytest.mark.integration

NOVA, _ = souls_of("disconnect")
LEADER_GIVES_UP_S = 1.5
# A render of several seconds, so the leader leaves while it runs and the others join it.
GRAPH_ARGS: dict[str, Any] = {"renderer": {"steps": 16, "width": 128, "height": 128}}


def variant_files(graph: Graph) -> set[str]:
    """The variant each object file belongs to (its name without the extension)."""
    files = graph.objects(f"soul/{NOVA}/")
    return {f.rpartition("/")[2].partition(".")[0] for f in files if "/variant/" in f}


def test_a_leader_that_disconnects_mid_miss_fails_no_one_waiting_on_its_render(
    graph: Graph,
) -> None:
    params = {"soul_id": NOVA, "cue": "a lighthouse in a storm"}
    outcome: dict[str, Any] = {}

    def ask(user_id: str, timeout_s: float) -> None:
        try:
            with httpx.Client(
                base_url=graph.base_url,
                timeout=timeout_s,
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as client:  # leaving the block closes the connection: the client is gone
                outcome[user_id] = client.get("/image", params={**params, "user_id": user_id})
        except httpx.TimeoutException as exc:
            outcome[user_id] = exc

    leader = threading.Thread(target=ask, args=("a", LEADER_GIVES_UP_S))
    leader.start()
    time.sleep(0.5)  # the leader's render has started; these two join it
    others = [threading.Thread(target=ask, args=(user, 300)) for user in ("b", "c")]
    for thread in others:
        thread.start()
    for thread in [leader, *others]:
        thread.join()

    assert isinstance(outcome["a"], httpx.TimeoutException)  # the leader did leave early
    for user in ("b", "c"):
        response = outcome[user]
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["cache"] == "miss"
        seen = graph.rows("SELECT variant_id FROM user_seen WHERE user_id = ?", tenant(user))
        assert [row["variant_id"] for row in seen] == [body["variant_id"]]
    assert outcome["b"].json()["variant_id"] == outcome["c"].json()["variant_id"]  # one render
    assert (
        graph.rows("SELECT * FROM user_seen WHERE user_id = ?", tenant("a")) == []
    )  # a never got it
    mine = graph.rows("SELECT variant_id FROM variant WHERE soul_id = ?", NOVA)
    rows = {row["variant_id"] for row in mine}
    assert variant_files(graph) == rows  # no object without its row, no row without objects

    # The leader asking again gets the finished render, as a cache hit.
    again = graph.image(NOVA, params["cue"], "a")
    assert again.status_code == 200 and again.json()["cache"] == "hit"
    assert again.json()["variant_id"] == outcome["b"].json()["variant_id"]
