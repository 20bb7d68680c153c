"""The FastAPI app the Ingress serves, with every error mapped by one table."""

from __future__ import annotations

from fastapi import FastAPI

from serve_app.api import errors


def create_api() -> FastAPI:
    api = FastAPI(
        title="Soul Serve",
        description="User-unique, soul-styled character GIFs with a prompt-similarity cache.",
        version="0.1.0",
    )
    api.state.api_keys = []  # set by the Ingress from Settings
    errors.install(api)
    return api
