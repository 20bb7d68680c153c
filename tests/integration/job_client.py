"""Jobs over HTTP: submit one, read it, poll it until it finishes, follow its event stream; a
project whose assets were generated (one job each) and locked."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
from soul_client import Graph

FINISHED = {"succeeded", "partial", "failed", "cancelled"}


def submit(client: httpx.Client, soul_id: str, **body: Any) -> dict[str, Any]:
    response = client.post("/jobs", json={"soul_id": soul_id, "kind": "image", **body})
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def job(graph: Graph, job_id: str, client: httpx.Client | None = None) -> dict[str, Any]:
    response = (client or graph.client).get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def wait(
    graph: Graph,
    job_id: str,
    until: Any = None,
    timeout_s: float = 240,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Poll the job until ``until(doc)`` (by default: it finished)."""
    until = until or (lambda d: d["status"] in FINISHED)
    deadline = time.monotonic() + timeout_s
    while True:
        doc = job(graph, job_id, client)
        if until(doc) or time.monotonic() > deadline:
            return doc
        time.sleep(0.1)


def events(graph: Graph, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    with graph.client.stream("GET", f"/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield name, json.loads(line.removeprefix("data: "))


def locked_project(graph: Graph, name: str, assets: list[dict[str, Any]]) -> str:
    """A new project with these assets (``asset_type``, ``name``, ``canonical_prompt``…), each
    generated with one image (its front) and locked: its id."""
    made = graph.client.post("/v1/projects", json={"name": name})
    assert made.status_code == 201, made.text
    pid: str = made.json()["project_id"]
    for spec in assets:
        generated = graph.client.post(
            f"/v1/projects/{pid}/assets:generate", json={**spec, "roles": ["front"]}
        )
        assert generated.status_code == 202, generated.text
        assert wait(graph, generated.json()["job"]["job_id"])["status"] == "succeeded"
        aid = generated.json()["asset"]["asset_id"]
        assert graph.client.post(f"/v1/projects/{pid}/assets/{aid}:lock").status_code == 200
    return pid
