"""Identity versions (``identity_version``, keyed ``(soul_id, version)``: a soul's versions are
a primary-key prefix). A version is inserted once (a lost race for its number inserts nothing)
and changed only while unlocked, by a write fenced on the ``updated_at_ts`` the writer read."""

from __future__ import annotations

import json
from typing import Any

from serve_app.characters.identities import IdentityVersion
from serve_app.prompts import soul_prefix_bounds
from serve_app.schemas import Variant
from serve_app.storage.store import Row, Store, TableDDL, insert_sql
from serve_app.storage.tables.variants import LIVE_VARIANT, variant_from

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS identity_version (
  soul_id TEXT NOT NULL, version INTEGER NOT NULL, state TEXT NOT NULL, owner TEXT NOT NULL,
  body_json TEXT NOT NULL, references_json TEXT NOT NULL DEFAULT '[]', anchors_json TEXT,
  created_at_ts INTEGER NOT NULL, updated_at_ts INTEGER NOT NULL,
  PRIMARY KEY (soul_id, version));
""",
    postgres="""
CREATE TABLE IF NOT EXISTS identity_version (
  soul_id TEXT COLLATE "C" NOT NULL, version INTEGER NOT NULL, state TEXT NOT NULL,
  owner TEXT NOT NULL, body_json JSONB NOT NULL, references_json JSONB NOT NULL DEFAULT '[]',
  anchors_json JSONB, created_at_ts BIGINT NOT NULL, updated_at_ts BIGINT NOT NULL,
  PRIMARY KEY (soul_id, version));
""",
)

_BODY = (
    "description",
    "prompt",
    "negative_prompt",
    "seed_bank",
    "strength",
    "parent",
    "change_note",
)
_COLUMNS = [
    "soul_id",
    "version",
    "state",
    "owner",
    "body_json",
    "references_json",
    "anchors_json",
    "created_at_ts",
    "updated_at_ts",
]
_INSERT = insert_sql("identity_version", _COLUMNS, "ON CONFLICT DO NOTHING RETURNING version")
_UPDATE = (
    "UPDATE identity_version SET state = ?, body_json = ?, references_json = ?, "
    "anchors_json = ?, updated_at_ts = ? WHERE soul_id = ? AND version = ? "
    "AND state = 'unlocked' AND updated_at_ts = ?"
)


def _row(v: IdentityVersion) -> tuple[Any, ...]:
    body = v.model_dump(mode="json", include=set(_BODY))
    anchors = v.anchors.model_dump_json() if v.anchors is not None else None
    return (
        v.soul_id,
        v.version,
        v.state,
        v.owner,
        json.dumps(body, sort_keys=True),
        json.dumps(v.references),
        anchors,
        v.created_at_ts,
        v.updated_at_ts,
    )


def _version_from(row: Row) -> IdentityVersion:
    return IdentityVersion(
        **json.loads(row["body_json"]),
        soul_id=row["soul_id"],
        version=row["version"],
        state=row["state"],
        owner=row["owner"],
        references=json.loads(row["references_json"]),
        anchors=json.loads(row["anchors_json"]) if row["anchors_json"] is not None else None,
        created_at_ts=row["created_at_ts"],
        updated_at_ts=row["updated_at_ts"],
    )


class IdentityRows(Store):
    ddl = DDL

    async def last_identity_version(self, soul_id: str) -> int:
        """The soul's highest version number (0: none yet)."""
        row = await self._row(
            "SELECT version FROM identity_version WHERE soul_id = ? ORDER BY version DESC LIMIT 1",
            (soul_id,),
        )
        return int(row["version"]) if row else 0

    async def insert_identity(self, version: IdentityVersion) -> bool:
        """Insert a new version; False: that number was taken first."""
        return await self._row(_INSERT, _row(version)) is not None

    async def get_identity(self, soul_id: str, version: int) -> IdentityVersion | None:
        row = await self._row(
            "SELECT * FROM identity_version WHERE soul_id = ? AND version = ?",
            (soul_id, version),
        )
        return _version_from(row) if row else None

    async def list_identities(self, soul_id: str) -> list[IdentityVersion]:
        """A soul's versions, oldest first."""
        rows = await self._rows(
            "SELECT * FROM identity_version WHERE soul_id = ? ORDER BY version", (soul_id,)
        )
        return [_version_from(r) for r in rows]

    async def update_identity(self, version: IdentityVersion, if_ts: int) -> bool:
        """Write an unlocked version's new state (locking it too, when ``state`` says so) only
        if nobody wrote it since ``if_ts``; False: it is locked or was changed meanwhile."""
        row = _row(version)
        changed = await self._write(
            _UPDATE, (*row[2:3], *row[4:7], version.updated_at_ts, *row[:2], if_ts)
        )
        return changed > 0

    async def soul_variants_since(self, soul_id: str, since_id: str) -> list[Variant]:
        """The soul's live variants made at or after ``since_id`` (a ULID), oldest first: a
        primary-key range scan of its keys' variants."""
        low, high = soul_prefix_bounds(soul_id)
        rows = await self._rows(
            f"SELECT * FROM variant WHERE pk_id >= ? AND pk_id < ? AND variant_id >= ? "
            f"AND {LIVE_VARIANT}",
            (low, high, since_id),
        )
        return sorted((variant_from(r) for r in rows), key=lambda v: v.variant_id)
