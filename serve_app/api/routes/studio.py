"""The studio: the web page for people (its scripts are served from ``/studio/assets``)."""

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from serve_app.api.app import STUDIO
from serve_app.api.errors import responses

router = APIRouter(tags=["studio"])


@router.get("/", include_in_schema=False)
async def home() -> RedirectResponse:
    return RedirectResponse("/studio")


@router.get("/studio", response_class=FileResponse, responses=responses())
async def studio() -> FileResponse:
    """The web page for people: generate, selfies, packs, the queue, styles, the catalog."""
    return FileResponse(STUDIO / "index.html", headers={"Cache-Control": "no-cache"})
