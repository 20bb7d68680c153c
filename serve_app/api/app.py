"""The FastAPI app the Ingress serves, with every error mapped by one table."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from serve_app.api import errors
from serve_app.api.deps import unambiguous

STUDIO = Path(__file__).resolve().parent.parent / "studio"


def create_api() -> FastAPI:
    api = FastAPI(
        title="Soul Serve",
        description="User-unique, soul-styled character GIFs with a prompt-similarity cache.",
        version="0.1.0",
        dependencies=[Depends(unambiguous)],
        # Served by the Ingress, with this deployment's formats (api/openapi.py).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    api.state.api_keys = []  # set by the Ingress from Settings
    api.state.admin_keys = []
    errors.install(api)
    # The studio's scripts and styles; the page itself is GET /studio (routes/studio.py).
    api.mount("/studio/assets", StaticFiles(directory=STUDIO), name="studio")
    return api
