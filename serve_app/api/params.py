"""Path parameters the route families share: the ids a URL names."""

from typing import Annotated

from fastapi import Path

ULID_PATTERN = r"^[0-9A-HJKMNP-TV-Z]{26}$"
JobId = Annotated[str, Path(pattern=ULID_PATTERN, description="A job id (ULID).")]
PkId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}:[0-9a-f]{40}$")]
VariantId = Annotated[str, Path(pattern=ULID_PATTERN, description="A variant id (ULID).")]
