"""The asset directory the storyboard tests compile against: a project's assets as the
projects facet would list them (names, aliases, the latest locked version)."""

from __future__ import annotations

from serve_app.stories.assets import AssetTable, DirectoryEntry
from serve_app.stories.composition import PinnedAsset, ProjectStyle

ENTRIES = [
    DirectoryEntry("CHAR_NOVA", "character", "Nova", ("Nova Reyes",), locked_version=3),
    DirectoryEntry("CHAR_MARCO", "character", "Marco", (), locked_version=1),
    DirectoryEntry("CHAR_MCCLANE", "character", "McClane", ("John McClane",), locked_version=2),
    DirectoryEntry("CHAR_KEEPER", "character", "Old Keeper", (), locked_version=None),
    DirectoryEntry("ENV_CLIFF", "environment", "Lighthouse Cliff", (), locked_version=1),
    DirectoryEntry("ENV_LIGHTHOUSE", "environment", "Lighthouse", (), locked_version=2),
    DirectoryEntry("ENV_HARBOR", "environment", "Harbor", ("The Harbor",), locked_version=1),
    DirectoryEntry("NAT_SPRAY", "nature", "Sea Spray", (), locked_version=1),
    DirectoryEntry("PROP_LANTERN", "prop", "Lantern", ("storm lantern",), locked_version=4),
]


def directory() -> AssetTable:
    return AssetTable(ENTRIES)


def registry() -> dict[str, PinnedAsset]:
    """What the asset registry hands composition for each locked pin."""
    prompts = {
        "CHAR_NOVA": "woman in her 30s, dark curly hair, oilskin coat",
        "CHAR_MARCO": "older man, grey beard, wool sweater",
        "CHAR_MCCLANE": "man in his 40s, white vest",
        "ENV_CLIFF": "grassy cliff above the sea, white lighthouse",
        "ENV_LIGHTHOUSE": "round lamp room, brass lens, glass panes",
        "ENV_HARBOR": "small fishing harbor, wooden boats",
        "NAT_SPRAY": "sea spray",
        "PROP_LANTERN": "brass storm lantern",
    }
    out = {}
    for entry in ENTRIES:
        if entry.locked_version is None:
            continue
        pin = f"{entry.asset_id}@v{entry.locked_version}"
        reference = f"proj/P1/assets/{entry.asset_id}/v{entry.locked_version}/front.png"
        out[pin] = PinnedAsset(
            pin=pin,
            asset_type=entry.asset_type,
            canonical_prompt=prompts[entry.asset_id],
            negative_prompt="blurry" if entry.asset_type == "character" else "",
            reference=reference if entry.asset_type in ("character", "environment") else None,
            strength=0.7 if entry.asset_type == "character" else 0.4,
        )
    return out


STYLE = ProjectStyle(
    project_id="P1",
    style_anchor_prompt="cinematic storyboard, ink and wash",
    negative_prompt="text, watermark",
)
