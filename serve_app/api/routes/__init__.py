"""The HTTP API by family: one ``APIRouter`` per module, with its tags and dependencies; the
Ingress serves ``routed_api()``. A new family of routes is a new module here and a row below."""

from fastapi import APIRouter, FastAPI

from serve_app.api.app import create_api
from serve_app.api.routes import (
    admin,
    health,
    identities,
    images,
    jobs,
    keys,
    media,
    portraits,
    prints,
    project_images,
    projects,
    references,
    selfies,
    stats,
    storyboards,
    studio,
    styles,
    timeline,
    users,
    variants,
)

FAMILIES = (
    studio,
    health,
    images,
    selfies,
    media,
    styles,
    references,
    jobs,
    admin,
    keys,
    variants,
    prints,
    users,
    stats,
    identities,
    projects,
    storyboards,
    timeline,
    project_images,
    portraits,
)
ROUTERS: tuple[APIRouter, ...] = tuple(family.router for family in FAMILIES)


def routed_api() -> FastAPI:
    """The app with every family's routes."""
    api = create_api()
    for router in ROUTERS:
        api.include_router(router)
    return api
