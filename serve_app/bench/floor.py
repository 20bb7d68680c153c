"""The floor `soul bench hot` compares a cache hit with: a graph of the service's shape that does
nothing. A FastAPI ingress answers ``GET /image`` after one handle call to a trivial deployment,
with a small JSON body like a hit's, behind the same proxy and middlewares as the service. What a
hit costs above it is ours; the floor itself is Ray's."""

from __future__ import annotations

from typing import cast

from fastapi import FastAPI
from ray import serve
from ray.serve import Application, Deployment
from ray.serve.handle import DeploymentHandle

api = FastAPI()


@serve.deployment(name="FloorLookup", ray_actor_options={"num_cpus": 0})
class FloorLookup:
    async def lookup(self, soul_id: str, cue: str, user_id: str) -> str:
        return f"{soul_id}:{len(cue)}:{user_id}"


@serve.deployment(name="FloorIngress", ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class FloorIngress:
    def __init__(self, lookup: DeploymentHandle) -> None:
        self.lookup = lookup

    @api.get("/image")
    async def image(self, soul_id: str, cue: str, user_id: str) -> dict[str, str]:
        variant = await self.lookup.lookup.remote(soul_id, cue, user_id)
        url = f"http://127.0.0.1/media/soul/{soul_id}/variant/{variant}.gif?exp=0&sig=0"
        return {"url": url, "variant_id": variant, "pk_id": f"{soul_id}:0", "cache": "hit"}


def build_floor() -> Application:
    # @serve.deployment turned each class into a Deployment; type checkers see the class.
    ingress, lookup = cast(Deployment, FloorIngress), cast(Deployment, FloorLookup)
    return ingress.bind(lookup.bind())
