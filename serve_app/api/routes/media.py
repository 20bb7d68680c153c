"""``GET /media/...``: objects of the local store, to whoever holds a valid signed URL."""

import mimetypes
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from serve_app.api.errors import responses
from serve_app.api.services import Services
from serve_app.media.answers import media_file

router = APIRouter(tags=["media"])


@router.get("/media/{storage_key:path}", responses=responses(403, 404, 422))
async def media(
    storage_key: str,
    exp: Annotated[int, Query()],
    sig: Annotated[str, Query(max_length=100)],
    services: Services,
) -> FileResponse:
    """An object of the local store, only with a valid, unexpired signature."""
    path = media_file(services.objects, storage_key, exp, sig)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(
        path, media_type=media_type, headers={"Cache-Control": "private, max-age=300"}
    )
