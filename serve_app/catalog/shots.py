"""The shots facet: which landmark, from which angle, a user's next selfie in a city shows
(``landmark_log``), so that a user's selfies do not repeat while fresh shots remain."""

from __future__ import annotations

from serve_app.catalog.facet import Facet
from serve_app.delivery.places import Used, choose_shot
from serve_app.ids import now_ms


class Shots(Facet):
    async def choose_shot(
        self, soul_id: str, city_key: str, user_id: str, landmarks: list[str], angles: list[str]
    ) -> tuple[str, str] | None:
        """The user's next (landmark, angle) in the city, logged with one single-row write that
        only succeeds if nobody logged that landmark since we read: concurrent selfies of one
        user therefore get different shots. None: too many concurrent selfies to settle."""
        for _ in range(len(landmarks) + 4):
            used = {
                landmark: Used(used_at_ts=ts, angle_key=angle)
                for landmark, (ts, angle) in (
                    await self.store.landmarks_used(soul_id, city_key, user_id)
                ).items()
            }
            landmark, angle = choose_shot(landmarks, angles, used)
            seen = used.get(landmark)
            if_ts = seen.used_at_ts if seen else None
            # Strictly after every earlier shot: "least recently used" must not tie within a ms.
            ts = max([now_ms(), *(u.used_at_ts + 1 for u in used.values())])
            if await self.store.take_landmark(
                soul_id, city_key, user_id, landmark, angle, ts, if_ts
            ):
                return landmark, angle
        return None
