"""Selfies: the soul at a landmark of a city, in a mood, from a camera angle (``places``).

A selfie is an ordinary delivery of a prompt key of its own, one per shot
(``selfie:<city>:<landmark>:<mood>:<angle>``): the place chooser names the shot, the key's
variants are claimed and made as any cue's are, and a key's name tells a recovered job item
which shot it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from serve_app.delivery.places import City, Places
from serve_app.errors import Busy, InvalidRequest, NotFound
from serve_app.schemas import PromptKey

_SELFIE_KEY = "selfie:{city}:{landmark}:{mood}:{angle}"
_SELFIE = re.compile(r"selfie:(?P<city>\w+):(?P<landmark>\w+):(?P<mood>\w+):(?P<angle>\w+)")


class UnknownCity(NotFound):
    def __init__(self, city_key: str, known: list[str]) -> None:
        super().__init__(f"unknown city {city_key!r}; known cities: {', '.join(known)}")


class Place(NamedTuple):
    """Where a selfie is asked for: a city of ``places`` and a mood."""

    city_key: str
    mood: str


@dataclass(frozen=True)
class Spot:
    """A chosen shot: its prompt key, the scene the soul is rendered in, and where it is."""

    key: PromptKey
    scene: str
    landmark: str
    angle: str


class Selfies:
    def __init__(self, catalog: Any, places: Places) -> None:
        self.catalog = catalog
        self.places = places

    def check_place(self, city_key: str, mood: str) -> City:
        """The city of a selfie; refuses an unknown city or mood before anything is written."""
        city = self.places.cities.get(city_key)
        if city is None:
            raise UnknownCity(city_key, list(self.places.cities))
        if mood not in self.places.moods:
            raise InvalidRequest(f"mood: unknown {mood!r}; one of: {', '.join(self.places.moods)}")
        return city

    async def choose(self, soul_id: str, city_key: str, mood: str, user_id: str) -> Spot:
        """The next landmark of the city for this user (logged), and its prompt key."""
        city = self.check_place(city_key, mood)
        shot = await self.catalog.choose_shot.remote(
            soul_id, city_key, user_id, list(city.landmarks), list(self.places.angles)
        )
        if shot is None:
            raise Busy("too many concurrent selfies; retry")
        landmark, angle = shot
        key = await self.catalog.ensure_key.remote(
            soul_id, _SELFIE_KEY.format(city=city_key, landmark=landmark, mood=mood, angle=angle)
        )
        scene = ", ".join(
            [
                f"selfie in {city.display_name}",
                city.landmarks[landmark],
                self.places.moods[mood],
                self.places.angles[angle],
            ]
        )
        return Spot(key, scene, landmark, angle)


def shot_of(key_norm: str) -> tuple[str, str] | None:
    """(landmark, angle) of a selfie's prompt key; None for any other key."""
    shot = _SELFIE.fullmatch(key_norm)
    return None if shot is None else (shot["landmark"], shot["angle"])
