"""Images in a request body, for the identity routes: image files as ``multipart/form-data``
(field ``files``), or JSON ``{url}`` fetched by the reference fetcher (SSRF guard, caps). Every
image is checked (format, byte cap, pixel cap before decoding, EXIF orientation) before the
route stores or judges any of them."""

import asyncio

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from serve_app.api.identity_protocol import MAX_UPLOADS, UrlImage
from serve_app.api.services import IngressServices
from serve_app.errors import InvalidRequest
from serve_app.references import ReferenceImage, checked_upload, fetch_reference


def image_body(most: int = MAX_UPLOADS) -> dict[str, object]:
    """The OpenAPI request body of a route that takes up to ``most`` images."""
    files = {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "minItems": 1,
        "maxItems": most,
    }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"files": files},
                        "required": ["files"],
                        "additionalProperties": False,
                    }
                },
                "application/json": {"schema": UrlImage.model_json_schema()},
            },
        }
    }


ASK = 'send image files as multipart/form-data (field files) or JSON {"url": ...}'


async def images_in(
    request: Request, services: IngressServices, most: int = MAX_UPLOADS
) -> list[ReferenceImage]:
    """The request's images, checked; ``InvalidRequest`` (422) or ``ReferenceTooLarge`` (413)
    for the first that is refused, before anything is written."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind == "multipart/form-data":
        references = services.settings.references
        files = await _files(request, most, references.reference_max_bytes + 1)
        return await asyncio.to_thread(
            lambda: [checked_upload(data, references, name) for name, data in files]
        )
    if kind == "application/json":
        try:
            body = UrlImage.model_validate_json(await request.body())
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "body"
            raise InvalidRequest(f"{where}: {problem['msg']}") from exc
        return [await asyncio.to_thread(fetch_reference, body.url, services.settings)]
    raise InvalidRequest(f"body: {ASK}")


async def _files(request: Request, most: int, cap: int) -> list[tuple[str, bytes]]:
    """The uploaded files, each read to at most ``cap`` bytes (enough to know it is over)."""
    try:
        form = await request.form(max_files=most, max_fields=most)
    except HTTPException as exc:  # Starlette's own limits and malformed multipart
        raise InvalidRequest(f"body: {exc.detail}; {ASK}") from exc
    uploads = [(name, v) for name, v in form.multi_items() if isinstance(v, UploadFile)]
    if not uploads:
        raise InvalidRequest(f"files: no image file in the body; {ASK}")
    return [(f"files[{i}]", await upload.read(cap)) for i, (_, upload) in enumerate(uploads)]
