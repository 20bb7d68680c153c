"""Selfie places (seed §6): cities, landmarks, camera angles and moods as data, and the chooser.

The chooser is pure: given what a user already had in a city, it names the next shot. The
catalog applies it with single-row writes that make concurrent requests pick different shots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from serve_app.settings import config_file

Key = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_]{0,63}$")]
Words = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class City(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: str
    landmarks: dict[Key, Words] = Field(min_length=1, description="Landmark key -> prompt words.")


class Places(BaseModel):
    """config/landmarks.yaml."""

    model_config = ConfigDict(extra="forbid")

    angles: dict[Key, Words] = Field(min_length=2, description="Camera angle -> prompt words.")
    moods: dict[Key, Words] = Field(min_length=1, description="Mood -> prompt words.")
    cities: dict[Key, City] = Field(min_length=1)


class Used(BaseModel):
    """A landmark a user already had in a city: when, and from which angle."""

    used_at_ts: int
    angle_key: str


def load_places(path: str | Path) -> Places:
    return Places.model_validate(yaml.safe_load(config_file(path).read_text()))


def choose_shot(landmarks: list[str], angles: list[str], used: dict[str, Used]) -> tuple[str, str]:
    """(landmark, angle): the first landmark the user has not had, from the first angle; once
    all are used, the least recently used one, from the angle after the one it had last time."""
    fresh = [landmark for landmark in landmarks if landmark not in used]
    if fresh:
        return fresh[0], angles[0]
    landmark = min(landmarks, key=lambda name: (used[name].used_at_ts, landmarks.index(name)))
    last = used[landmark].angle_key
    following = (angles.index(last) + 1) % len(angles) if last in angles else 0
    return landmark, angles[following]
