"""A project's storyboard (``script``, ``scene``, ``frame``, ``frame_version``).

Every key starts with the ``project_id`` (a project's scripts, scenes and frames, a frame's
versions are primary-key prefixes; no statement reaches across projects). A script and a scene
are written last-write-wins (a recompile writes them again); a frame is changed fenced on the
``updated_at_ts`` its writer read; a frame version is inserted once per number and then changed
(its status, report, image, error) fenced the same way. The project's event log is ``project_event``
(``tables/projects.py``).
"""

from __future__ import annotations

import json
from typing import Any

from serve_app.storage.store import Row, Store, TableDDL, insert_sql, lww_upsert_sql
from serve_app.stories.graph import SceneNode
from serve_app.stories.records import Frame, FrameVersion, Scene, Script

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS script (
  project_id TEXT NOT NULL, script_id TEXT NOT NULL, title TEXT NOT NULL, raw_text TEXT NOT NULL,
  form TEXT, status TEXT NOT NULL, graph_hash TEXT, compiler_version TEXT,
  scene_ids_json TEXT NOT NULL, created_at_ts INTEGER NOT NULL, updated_at_ts INTEGER NOT NULL,
  PRIMARY KEY (project_id, script_id));
CREATE TABLE IF NOT EXISTS scene (
  project_id TEXT NOT NULL, scene_id TEXT NOT NULL, script_id TEXT NOT NULL,
  position INTEGER NOT NULL, graph_json TEXT NOT NULL, graph_hash TEXT NOT NULL,
  compiler_version TEXT NOT NULL, created_at_ts INTEGER NOT NULL,
  updated_at_ts INTEGER NOT NULL, PRIMARY KEY (project_id, scene_id));
CREATE TABLE IF NOT EXISTS frame (
  project_id TEXT NOT NULL, frame_id TEXT NOT NULL, scene_id TEXT NOT NULL,
  frame_index INTEGER NOT NULL, current_version INTEGER NOT NULL, approved_version INTEGER,
  created_at_ts INTEGER NOT NULL, updated_at_ts INTEGER NOT NULL,
  PRIMARY KEY (project_id, frame_id));
CREATE TABLE IF NOT EXISTS frame_version (
  project_id TEXT NOT NULL, frame_id TEXT NOT NULL, render_version INTEGER NOT NULL,
  status TEXT NOT NULL, body_json TEXT NOT NULL, consistency_report_json TEXT,
  image_key TEXT, error TEXT, created_at_ts INTEGER NOT NULL, updated_at_ts INTEGER NOT NULL,
  PRIMARY KEY (project_id, frame_id, render_version));
""",
    postgres="""
CREATE TABLE IF NOT EXISTS script (
  project_id TEXT COLLATE "C" NOT NULL, script_id TEXT COLLATE "C" NOT NULL,
  title TEXT NOT NULL, raw_text TEXT NOT NULL, form TEXT, status TEXT NOT NULL,
  graph_hash TEXT, compiler_version TEXT, scene_ids_json JSONB NOT NULL,
  created_at_ts BIGINT NOT NULL, updated_at_ts BIGINT NOT NULL,
  PRIMARY KEY (project_id, script_id));
CREATE TABLE IF NOT EXISTS scene (
  project_id TEXT COLLATE "C" NOT NULL, scene_id TEXT COLLATE "C" NOT NULL,
  script_id TEXT NOT NULL, position INTEGER NOT NULL, graph_json JSONB NOT NULL,
  graph_hash TEXT NOT NULL, compiler_version TEXT NOT NULL, created_at_ts BIGINT NOT NULL,
  updated_at_ts BIGINT NOT NULL, PRIMARY KEY (project_id, scene_id));
CREATE TABLE IF NOT EXISTS frame (
  project_id TEXT COLLATE "C" NOT NULL, frame_id TEXT COLLATE "C" NOT NULL,
  scene_id TEXT NOT NULL, frame_index INTEGER NOT NULL, current_version INTEGER NOT NULL,
  approved_version INTEGER, created_at_ts BIGINT NOT NULL, updated_at_ts BIGINT NOT NULL,
  PRIMARY KEY (project_id, frame_id));
CREATE TABLE IF NOT EXISTS frame_version (
  project_id TEXT COLLATE "C" NOT NULL, frame_id TEXT COLLATE "C" NOT NULL,
  render_version INTEGER NOT NULL, status TEXT NOT NULL, body_json JSONB NOT NULL,
  consistency_report_json JSONB, image_key TEXT, created_at_ts BIGINT NOT NULL,
  updated_at_ts BIGINT NOT NULL, PRIMARY KEY (project_id, frame_id, render_version));
ALTER TABLE frame_version ADD COLUMN IF NOT EXISTS error TEXT;
""",
    sqlite_added=(("frame_version", "error", "TEXT"),),
)

_SCRIPT_COLUMNS = [
    "project_id",
    "script_id",
    "title",
    "raw_text",
    "form",
    "status",
    "graph_hash",
    "compiler_version",
    "scene_ids_json",
    "created_at_ts",
    "updated_at_ts",
]
_UPSERT_SCRIPT = lww_upsert_sql(
    "script", _SCRIPT_COLUMNS, ["project_id", "script_id"], "compiler_version"
)
_SCENE_COLUMNS = [
    "project_id",
    "scene_id",
    "script_id",
    "position",
    "graph_json",
    "graph_hash",
    "compiler_version",
    "created_at_ts",
    "updated_at_ts",
]
_UPSERT_SCENE = lww_upsert_sql("scene", _SCENE_COLUMNS, ["project_id", "scene_id"], "graph_hash")
_FRAME_COLUMNS = [
    "project_id",
    "frame_id",
    "scene_id",
    "frame_index",
    "current_version",
    "approved_version",
    "created_at_ts",
    "updated_at_ts",
]
_INSERT_FRAME = insert_sql("frame", _FRAME_COLUMNS)
_UPDATE_FRAME = (
    "UPDATE frame SET current_version = ?, approved_version = ?, updated_at_ts = ? "
    "WHERE project_id = ? AND frame_id = ? AND updated_at_ts = ?"
)
_VERSION_COLUMNS = [
    "project_id",
    "frame_id",
    "render_version",
    "status",
    "body_json",
    "consistency_report_json",
    "image_key",
    "error",
    "created_at_ts",
    "updated_at_ts",
]
_INSERT_VERSION = insert_sql(
    "frame_version", _VERSION_COLUMNS, "ON CONFLICT DO NOTHING RETURNING render_version"
)
_UPDATE_VERSION = (
    "UPDATE frame_version SET status = ?, consistency_report_json = ?, image_key = ?, "
    "error = ?, updated_at_ts = ? WHERE project_id = ? AND frame_id = ? AND render_version = ? "
    "AND updated_at_ts = ?"
)
_VERSION_BODY = {
    "scene_id",
    "frame_index",
    "graph_hash",
    "seed",
    "prompt",
    "pipeline_version",
    "pipeline_hash",
    "backdrop",
    "placements",
    "diff",
    "planned_by",
}


def _script_from(row: Row) -> Script:
    return Script(
        project_id=row["project_id"],
        script_id=row["script_id"],
        title=row["title"],
        raw_text=row["raw_text"],
        form=row["form"],
        status=row["status"],
        graph_hash=row["graph_hash"],
        compiler_version=row["compiler_version"],
        scene_ids=_json(row["scene_ids_json"]),
        created_at_ts=row["created_at_ts"],
        updated_at_ts=row["updated_at_ts"],
    )


def _json(value: Any) -> Any:
    """A JSON column: text in SQLite and (as the store reads it) in PostgreSQL."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _scene_from(row: Row) -> Scene:
    return Scene(
        project_id=row["project_id"],
        scene_id=row["scene_id"],
        script_id=row["script_id"],
        position=row["position"],
        graph=SceneNode.model_validate(_json(row["graph_json"])),
        created_at_ts=row["created_at_ts"],
        updated_at_ts=row["updated_at_ts"],
    )


def _frame_from(row: Row) -> Frame:
    return Frame(**{c: row[c] for c in _FRAME_COLUMNS})


def _version_from(row: Row) -> FrameVersion:
    report = row["consistency_report_json"]
    return FrameVersion(
        **_json(row["body_json"]),
        project_id=row["project_id"],
        frame_id=row["frame_id"],
        render_version=row["render_version"],
        status=row["status"],
        consistency_report=_json(report) if report is not None else None,
        image_key=row["image_key"],
        error=row["error"],
        created_at_ts=row["created_at_ts"],
        updated_at_ts=row["updated_at_ts"],
    )


class StoryRows(Store):
    ddl = DDL

    async def put_script(self, script: Script) -> None:
        """Insert or replace the script (last write wins)."""
        await self._write(
            _UPSERT_SCRIPT,
            (
                script.project_id,
                script.script_id,
                script.title,
                script.raw_text,
                script.form,
                script.status,
                script.graph_hash,
                script.compiler_version or "",
                json.dumps(script.scene_ids),
                script.created_at_ts,
                script.updated_at_ts,
            ),
        )

    async def get_script(self, project_id: str, script_id: str) -> Script | None:
        row = await self._row(
            "SELECT * FROM script WHERE project_id = ? AND script_id = ?", (project_id, script_id)
        )
        return _script_from(row) if row else None

    async def put_scene(self, scene: Scene) -> None:
        """Insert or replace the scene (last write wins)."""
        graph = scene.graph.model_dump(mode="json")
        await self._write(
            _UPSERT_SCENE,
            (
                scene.project_id,
                scene.scene_id,
                scene.script_id,
                scene.position,
                json.dumps(graph, sort_keys=True),
                scene.graph.graph_hash,
                scene.graph.compiler_version,
                scene.created_at_ts,
                scene.updated_at_ts,
            ),
        )

    async def get_scene(self, project_id: str, scene_id: str) -> Scene | None:
        row = await self._row(
            "SELECT * FROM scene WHERE project_id = ? AND scene_id = ?", (project_id, scene_id)
        )
        return _scene_from(row) if row else None

    async def project_scenes(self, project_id: str) -> list[Scene]:
        """Every scene of the project, by id (a primary-key prefix)."""
        rows = await self._rows(
            "SELECT * FROM scene WHERE project_id = ? ORDER BY scene_id", (project_id,)
        )
        return [_scene_from(r) for r in rows]

    async def insert_frame(self, frame: Frame) -> bool:
        """Insert a frame once; False: it was there."""
        row = tuple(getattr(frame, c) for c in _FRAME_COLUMNS)
        return await self._write(_INSERT_FRAME, row) > 0

    async def get_frame(self, project_id: str, frame_id: str) -> Frame | None:
        row = await self._row(
            "SELECT * FROM frame WHERE project_id = ? AND frame_id = ?", (project_id, frame_id)
        )
        return _frame_from(row) if row else None

    async def project_frames(self, project_id: str) -> list[Frame]:
        """Every frame of the project, by id (a primary-key prefix: a scene's frames sort
        together, by index)."""
        rows = await self._rows(
            "SELECT * FROM frame WHERE project_id = ? ORDER BY frame_id", (project_id,)
        )
        return [_frame_from(r) for r in rows]

    async def update_frame(self, frame: Frame, if_ts: int) -> bool:
        """Write the frame's versions only if nobody wrote it since ``if_ts``."""
        changed = await self._write(
            _UPDATE_FRAME,
            (
                frame.current_version,
                frame.approved_version,
                frame.updated_at_ts,
                frame.project_id,
                frame.frame_id,
                if_ts,
            ),
        )
        return changed > 0

    async def insert_frame_version(self, version: FrameVersion) -> bool:
        """Insert a new version; False: that number was taken first."""
        body = version.model_dump(mode="json", include=_VERSION_BODY)
        report = version.consistency_report
        row = (
            version.project_id,
            version.frame_id,
            version.render_version,
            version.status,
            json.dumps(body, sort_keys=True),
            json.dumps(report, sort_keys=True) if report is not None else None,
            version.image_key,
            version.error,
            version.created_at_ts,
            version.updated_at_ts,
        )
        return await self._row(_INSERT_VERSION, row) is not None

    async def get_frame_version(
        self, project_id: str, frame_id: str, render_version: int
    ) -> FrameVersion | None:
        row = await self._row(
            "SELECT * FROM frame_version "
            "WHERE project_id = ? AND frame_id = ? AND render_version = ?",
            (project_id, frame_id, render_version),
        )
        return _version_from(row) if row else None

    async def frame_versions(self, project_id: str, frame_id: str) -> list[FrameVersion]:
        """A frame's versions, oldest first."""
        rows = await self._rows(
            "SELECT * FROM frame_version WHERE project_id = ? AND frame_id = ? "
            "ORDER BY render_version",
            (project_id, frame_id),
        )
        return [_version_from(r) for r in rows]

    async def update_frame_version(self, version: FrameVersion, if_ts: int) -> bool:
        """Write a version's status, report, image and error only if nobody wrote it since
        ``if_ts``."""
        report = version.consistency_report
        changed = await self._write(
            _UPDATE_VERSION,
            (
                version.status,
                json.dumps(report, sort_keys=True) if report is not None else None,
                version.image_key,
                version.error,
                version.updated_at_ts,
                version.project_id,
                version.frame_id,
                version.render_version,
                if_ts,
            ),
        )
        return changed > 0
