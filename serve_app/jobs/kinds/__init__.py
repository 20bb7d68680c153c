"""The job kinds by name: a new kind is one module beside these and one line in ``KINDS``.

``JobSpec`` is the body of ``POST /jobs``: the specs of the kinds submitted there, told apart
by their ``kind``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from serve_app.jobs.kinds.asset_generate import AssetGenerateKind
from serve_app.jobs.kinds.base import JobKind
from serve_app.jobs.kinds.character_sheet import CharacterSheetKind
from serve_app.jobs.kinds.generate_all import GenerateAllKind
from serve_app.jobs.kinds.image import ImageKind
from serve_app.jobs.kinds.pack import PackKind
from serve_app.jobs.kinds.portrait import PortraitKind
from serve_app.jobs.kinds.prints import PrintKind
from serve_app.jobs.kinds.rebuild_keys import RebuildKeysKind
from serve_app.jobs.kinds.reserve import ReserveKind
from serve_app.jobs.kinds.scene_render import SceneRenderKind
from serve_app.jobs.kinds.selfie import SelfieKind
from serve_app.jobs.kinds.storyboard_export import StoryboardExportKind
from serve_app.jobs.spec import JobBase

KINDS: dict[str, JobKind[Any]] = {
    kind.name: kind
    for kind in (
        ImageKind(),
        SelfieKind(),
        PackKind(),
        RebuildKeysKind(),
        ReserveKind(),
        PrintKind(),
        CharacterSheetKind(),
        AssetGenerateKind(),
        SceneRenderKind(),
        StoryboardExportKind(),
        GenerateAllKind(),
        PortraitKind(),
    )
}

LEASE_LOOKUPS = sorted(name for name, kind in KINDS.items() if kind.lease_lookup)
"""The kinds whose first lease looks their item up (``JobWorker`` asks for them)."""

if TYPE_CHECKING:
    JobSpec = JobBase
else:
    JobSpec = Annotated[
        Union[tuple(kind.spec for kind in KINDS.values() if kind.submitted)],  # noqa: UP007
        Field(discriminator="kind"),
    ]

__all__ = ["KINDS", "JobKind", "JobSpec"]
