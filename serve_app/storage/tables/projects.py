"""Projects and what they own (``project``, ``asset``, ``asset_version``, ``project_event``).

Every key starts with what scopes it: a project with its owner (``(owner, project_id)``: a
client's projects are a primary-key prefix, and a read that names another client's project
finds nothing), everything else with its ``project_id`` (a project's assets, an asset's
versions, a project's events are primary-key prefixes; no statement reaches across projects).
A project is written last-write-wins; an asset once; a version inserted once per number and
changed only while unlocked (its lock and unlock included), fenced on the ``updated_at_ts`` the
writer read; an event is inserted once and never updated nor deleted.
"""

from __future__ import annotations

import json
from typing import Any

from serve_app.projects.models import Asset, AssetVersion, Project, ProjectEvent
from serve_app.storage.store import Row, Store, TableDDL, insert_sql

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS project (
  owner TEXT NOT NULL, project_id TEXT NOT NULL, status TEXT NOT NULL, body_json TEXT NOT NULL,
  created_at_ts INTEGER NOT NULL, updated_at_ts INTEGER NOT NULL,
  PRIMARY KEY (owner, project_id));
CREATE TABLE IF NOT EXISTS asset (
  project_id TEXT NOT NULL, asset_id TEXT NOT NULL, asset_type TEXT NOT NULL, name TEXT NOT NULL,
  tags_json TEXT NOT NULL, created_at_ts INTEGER NOT NULL, PRIMARY KEY (project_id, asset_id));
CREATE TABLE IF NOT EXISTS asset_version (
  project_id TEXT NOT NULL, asset_id TEXT NOT NULL, version INTEGER NOT NULL,
  is_locked INTEGER NOT NULL, body_json TEXT NOT NULL, images_json TEXT NOT NULL,
  prompt_embed BLOB, created_at_ts INTEGER NOT NULL, updated_at_ts INTEGER NOT NULL,
  taxonomy_json TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (project_id, asset_id, version));
CREATE TABLE IF NOT EXISTS project_event (
  project_id TEXT NOT NULL, seq TEXT NOT NULL, kind TEXT NOT NULL, who TEXT NOT NULL,
  at_ts INTEGER NOT NULL, payload_json TEXT NOT NULL, PRIMARY KEY (project_id, seq));
""",
    postgres="""
CREATE TABLE IF NOT EXISTS project (
  owner TEXT COLLATE "C" NOT NULL, project_id TEXT COLLATE "C" NOT NULL, status TEXT NOT NULL,
  body_json JSONB NOT NULL, created_at_ts BIGINT NOT NULL, updated_at_ts BIGINT NOT NULL,
  PRIMARY KEY (owner, project_id));
CREATE TABLE IF NOT EXISTS asset (
  project_id TEXT COLLATE "C" NOT NULL, asset_id TEXT COLLATE "C" NOT NULL,
  asset_type TEXT NOT NULL, name TEXT NOT NULL, tags_json JSONB NOT NULL,
  created_at_ts BIGINT NOT NULL, PRIMARY KEY (project_id, asset_id));
CREATE TABLE IF NOT EXISTS asset_version (
  project_id TEXT COLLATE "C" NOT NULL, asset_id TEXT COLLATE "C" NOT NULL,
  version INTEGER NOT NULL, is_locked BOOLEAN NOT NULL, body_json JSONB NOT NULL,
  images_json JSONB NOT NULL, prompt_embed BYTEA, created_at_ts BIGINT NOT NULL,
  updated_at_ts BIGINT NOT NULL, PRIMARY KEY (project_id, asset_id, version));
ALTER TABLE asset_version ADD COLUMN IF NOT EXISTS taxonomy_json JSONB NOT NULL DEFAULT '{}';
CREATE TABLE IF NOT EXISTS project_event (
  project_id TEXT COLLATE "C" NOT NULL, seq TEXT COLLATE "C" NOT NULL, kind TEXT NOT NULL,
  who TEXT NOT NULL, at_ts BIGINT NOT NULL, payload_json JSONB NOT NULL,
  PRIMARY KEY (project_id, seq));
""",
    sqlite_added=(("asset_version", "taxonomy_json", "TEXT NOT NULL DEFAULT '{}'"),),
)

_PROJECT_BODY = {
    "name",
    "visual_style",
    "style",
    "default_sampler",
    "style_anchor_prompt",
    "style_anchor_images",
    "policy",
    "composition",
}
_VERSION_BODY = {
    "canonical_prompt",
    "identity",
    "soul_id",
    "identity_version",
    "negative_prompt",
    "seed_bank",
    "sampler",
    "metadata",
    "roles",
    "parent",
    "change_note",
    "made_by",
}
_PROJECT_COLUMNS = ["owner", "project_id", "status", "body_json", "created_at_ts", "updated_at_ts"]
_UPSERT_PROJECT = (
    insert_sql("project", _PROJECT_COLUMNS, "")
    + "ON CONFLICT (owner, project_id) DO UPDATE SET status = excluded.status, "
    "body_json = excluded.body_json, updated_at_ts = excluded.updated_at_ts "
    "WHERE excluded.updated_at_ts > project.updated_at_ts"
)
_INSERT_ASSET = insert_sql(
    "asset", ["project_id", "asset_id", "asset_type", "name", "tags_json", "created_at_ts"]
)
_VERSION_COLUMNS = [
    "project_id",
    "asset_id",
    "version",
    "is_locked",
    "body_json",
    "images_json",
    "prompt_embed",
    "created_at_ts",
    "updated_at_ts",
    "taxonomy_json",
]
_INSERT_VERSION = insert_sql(
    "asset_version", _VERSION_COLUMNS, "ON CONFLICT DO NOTHING RETURNING version"
)
# Only an unlocked version changes (locking it is its last change, its identity pin with it),
# unless the change unlocks it.
_UPDATE_VERSION = (
    "UPDATE asset_version SET is_locked = ?, body_json = ?, images_json = ?, updated_at_ts = ? "
    "WHERE project_id = ? AND asset_id = ? AND version = ? AND updated_at_ts = ? "
    "AND (is_locked = ? OR is_locked = ?)"
)
_INSERT_EVENT = insert_sql(
    "project_event", ["project_id", "seq", "kind", "who", "at_ts", "payload_json"]
)


def _project_from(row: Row) -> Project:
    return Project(
        **json.loads(row["body_json"]),
        owner=row["owner"],
        project_id=row["project_id"],
        status=row["status"],
        created_at_ts=row["created_at_ts"],
        updated_at_ts=row["updated_at_ts"],
    )


def _asset_from(row: Row) -> Asset:
    return Asset(
        project_id=row["project_id"],
        asset_id=row["asset_id"],
        asset_type=row["asset_type"],
        name=row["name"],
        tags=json.loads(row["tags_json"]),
        created_at_ts=row["created_at_ts"],
    )


def _version_body(v: AssetVersion) -> str:
    return json.dumps(v.model_dump(mode="json", include=_VERSION_BODY), sort_keys=True)


def _version_row(v: AssetVersion, embed: bytes | None) -> tuple[Any, ...]:
    return (
        v.project_id,
        v.asset_id,
        v.version,
        v.is_locked,
        _version_body(v),
        json.dumps(v.images, sort_keys=True),
        embed,
        v.created_at_ts,
        v.updated_at_ts,
        json.dumps(v.taxonomy, sort_keys=True),
    )


def version_from(row: Row) -> AssetVersion:
    return AssetVersion(
        **json.loads(row["body_json"]),
        project_id=row["project_id"],
        asset_id=row["asset_id"],
        version=row["version"],
        is_locked=bool(row["is_locked"]),
        images=json.loads(row["images_json"]),
        taxonomy=json.loads(row["taxonomy_json"]),
        created_at_ts=row["created_at_ts"],
        updated_at_ts=row["updated_at_ts"],
    )


def _event_from(row: Row) -> ProjectEvent:
    return ProjectEvent(
        project_id=row["project_id"],
        seq=row["seq"],
        kind=row["kind"],
        who=row["who"],
        at_ts=row["at_ts"],
        payload=json.loads(row["payload_json"]),
    )


class ProjectRows(Store):
    ddl = DDL

    async def put_project(self, project: Project) -> None:
        """Insert or replace the project (last write wins)."""
        body = project.model_dump(mode="json", include=_PROJECT_BODY)
        await self._write(
            _UPSERT_PROJECT,
            (
                project.owner,
                project.project_id,
                project.status,
                json.dumps(body, sort_keys=True),
                project.created_at_ts,
                project.updated_at_ts,
            ),
        )

    async def get_project(self, owner: str, project_id: str) -> Project | None:
        row = await self._row(
            "SELECT * FROM project WHERE owner = ? AND project_id = ?", (owner, project_id)
        )
        return _project_from(row) if row else None

    async def projects_page(self, owner: str, after: str, limit: int) -> list[Project]:
        """The owner's projects after the id ``after``, oldest first (ids are time-ordered)."""
        rows = await self._rows(
            "SELECT * FROM project WHERE owner = ? AND project_id > ? ORDER BY project_id LIMIT ?",
            (owner, after, limit),
        )
        return [_project_from(r) for r in rows]

    async def insert_asset(self, asset: Asset) -> None:
        await self._write(
            _INSERT_ASSET,
            (
                asset.project_id,
                asset.asset_id,
                asset.asset_type,
                asset.name,
                json.dumps(asset.tags),
                asset.created_at_ts,
            ),
        )

    async def get_asset(self, project_id: str, asset_id: str) -> Asset | None:
        row = await self._row(
            "SELECT * FROM asset WHERE project_id = ? AND asset_id = ?", (project_id, asset_id)
        )
        return _asset_from(row) if row else None

    async def project_asset_labels(self, project_id: str) -> list[tuple[str, str, str]]:
        """(asset_id, asset_type, tags as JSON) of every asset of the project, by id: what a
        search filters on, a primary-key prefix."""
        rows = await self._rows(
            "SELECT asset_id, asset_type, tags_json FROM asset WHERE project_id = ? "
            "ORDER BY asset_id",
            (project_id,),
        )
        return [(r["asset_id"], r["asset_type"], r["tags_json"]) for r in rows]

    async def project_taxonomies(self, project_id: str) -> list[tuple[str, int, str]]:
        """(asset_id, version, taxonomy as JSON) of every version of the project: what a search
        by taxonomy filters on, a primary-key prefix."""
        rows = await self._rows(
            "SELECT asset_id, version, taxonomy_json FROM asset_version WHERE project_id = ?",
            (project_id,),
        )
        return [(r["asset_id"], r["version"], r["taxonomy_json"]) for r in rows]

    async def insert_asset_version(self, version: AssetVersion, embed: bytes | None) -> bool:
        """Insert a new version; False: that number was taken first."""
        return await self._row(_INSERT_VERSION, _version_row(version, embed)) is not None

    async def get_asset_version(
        self, project_id: str, asset_id: str, version: int
    ) -> AssetVersion | None:
        row = await self._row(
            "SELECT * FROM asset_version WHERE project_id = ? AND asset_id = ? AND version = ?",
            (project_id, asset_id, version),
        )
        return version_from(row) if row else None

    async def asset_versions(self, project_id: str, asset_id: str) -> list[AssetVersion]:
        """An asset's versions, oldest first."""
        rows = await self._rows(
            "SELECT * FROM asset_version WHERE project_id = ? AND asset_id = ? ORDER BY version",
            (project_id, asset_id),
        )
        return [version_from(r) for r in rows]

    async def update_asset_version(
        self, version: AssetVersion, if_ts: int, unlocking: bool = False
    ) -> bool:
        """Write a version's lock state, body and images only if it is unlocked (or,
        ``unlocking``, whatever its state) and nobody wrote it since ``if_ts``."""
        changed = await self._write(
            _UPDATE_VERSION,
            (
                version.is_locked,
                _version_body(version),
                json.dumps(version.images, sort_keys=True),
                version.updated_at_ts,
                version.project_id,
                version.asset_id,
                version.version,
                if_ts,
                False,
                unlocking,
            ),
        )
        return changed > 0

    async def asset_embedding(self, project_id: str, asset_id: str, version: int) -> bytes | None:
        row = await self._row(
            "SELECT prompt_embed FROM asset_version "
            "WHERE project_id = ? AND asset_id = ? AND version = ?",
            (project_id, asset_id, version),
        )
        return bytes(row["prompt_embed"]) if row and row["prompt_embed"] is not None else None

    async def project_embeddings(self, project_id: str) -> list[tuple[str, int, bytes]]:
        """(asset_id, version, prompt embedding) of every version of the project that has one:
        a primary-key prefix, the project's vector namespace."""
        rows = await self._rows(
            "SELECT asset_id, version, prompt_embed FROM asset_version "
            "WHERE project_id = ? AND prompt_embed IS NOT NULL",
            (project_id,),
        )
        return [(r["asset_id"], r["version"], bytes(r["prompt_embed"])) for r in rows]

    async def append_event(self, event: ProjectEvent) -> None:
        await self._write(
            _INSERT_EVENT,
            (
                event.project_id,
                event.seq,
                event.kind,
                event.who,
                event.at_ts,
                json.dumps(event.payload, sort_keys=True),
            ),
        )

    async def events_page(self, project_id: str, after: str, limit: int) -> list[ProjectEvent]:
        """The project's events after ``after`` (a seq), in the order they were logged."""
        rows = await self._rows(
            "SELECT * FROM project_event WHERE project_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (project_id, after, limit),
        )
        return [_event_from(r) for r in rows]
