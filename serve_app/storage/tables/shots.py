"""Selfie shots (``landmark_log``): which landmarks of a city a user had, and from which angle
(keyed ``(soul_id, city_key, user_id, landmark_key)``: a user's city is a primary-key prefix)."""

from __future__ import annotations

from serve_app.storage.store import Store, TableDDL

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS landmark_log (
  soul_id TEXT NOT NULL, city_key TEXT NOT NULL, landmark_key TEXT NOT NULL,
  user_id TEXT NOT NULL DEFAULT '', used_at_ts INTEGER NOT NULL,
  angle_key TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (soul_id, city_key, user_id, landmark_key));
""",
    postgres="""
CREATE TABLE IF NOT EXISTS landmark_log (
  soul_id TEXT COLLATE "C" NOT NULL, city_key TEXT COLLATE "C" NOT NULL,
  landmark_key TEXT COLLATE "C" NOT NULL, user_id TEXT COLLATE "C" NOT NULL DEFAULT '',
  used_at_ts BIGINT NOT NULL, angle_key TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (soul_id, city_key, user_id, landmark_key));
ALTER TABLE landmark_log ADD COLUMN IF NOT EXISTS angle_key TEXT NOT NULL DEFAULT '';
""",
    sqlite_added=(("landmark_log", "angle_key", "TEXT NOT NULL DEFAULT ''"),),
)


class ShotRows(Store):
    ddl = DDL

    async def landmarks_used(
        self, soul_id: str, city_key: str, user_id: str
    ) -> dict[str, tuple[int, str]]:
        """landmark_key -> (used_at_ts, angle_key) for this soul, city and user."""
        rows = await self._rows(
            "SELECT landmark_key, used_at_ts, angle_key FROM landmark_log "
            "WHERE soul_id = ? AND city_key = ? AND user_id = ?",
            (soul_id, city_key, user_id),
        )
        return {r["landmark_key"]: (r["used_at_ts"], r["angle_key"]) for r in rows}

    # Seven parameters, the row's key and its version: the store suite calls it so.
    async def take_landmark(
        self,
        soul_id: str,
        city_key: str,
        user_id: str,
        landmark_key: str,
        angle_key: str,
        ts: int,
        if_ts: int | None,
    ) -> bool:
        """Log a shot, one row: a landmark new to the user (``if_ts`` None) is inserted only if
        still absent; a repeat overwrites only the version read (``used_at_ts == if_ts``). False:
        a concurrent request took it first."""
        key = (soul_id, city_key, user_id, landmark_key)
        if if_ts is None:
            row = await self._row(
                "INSERT INTO landmark_log (soul_id, city_key, user_id, landmark_key, used_at_ts, "
                "angle_key) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING used_at_ts",
                (*key, ts, angle_key),
            )
            return row is not None
        changed = await self._write(
            "UPDATE landmark_log SET used_at_ts = ?, angle_key = ? WHERE soul_id = ? AND "
            "city_key = ? AND user_id = ? AND landmark_key = ? AND used_at_ts = ?",
            (ts, angle_key, *key, if_ts),
        )
        return changed > 0
