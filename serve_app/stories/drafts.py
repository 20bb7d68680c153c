"""What both script forms read into before names are resolved: ``SceneDraft``s with each name
and where it was written; and the words of directions (camera, notes, scene headings).

Directions in a Fountain script are notes, ``[[Key: value]]``, with the keys of ``NOTE_KEYS``
(``Camera: wide shot, low angle``, ``Mood: tense``, ``Props: lantern, rope``); any other note
is kept as a note. The structured form has a field for each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from serve_app.stories.assets import name_key
from serve_app.stories.graph import Angle, Camera, Region, ShotSize

# Words a camera direction may use, longest first (so "extreme close-up" is not a "close-up").
SHOT_WORDS: list[tuple[str, ShotSize]] = [
    ("extreme wide", "extreme-wide"),
    ("establishing", "extreme-wide"),
    ("extreme long", "extreme-wide"),
    ("ews", "extreme-wide"),
    ("extreme close", "extreme-close-up"),
    ("ecu", "extreme-close-up"),
    ("medium close", "medium-close-up"),
    ("mcu", "medium-close-up"),
    ("medium wide", "medium-wide"),
    ("medium long", "medium-wide"),
    ("cowboy", "medium-wide"),
    ("close", "close-up"),
    ("cu", "close-up"),
    ("medium", "medium"),
    ("mid", "medium"),
    ("ms", "medium"),
    ("full", "full"),
    ("fs", "full"),
    ("wide", "wide"),
    ("long", "wide"),
    ("ws", "wide"),
    ("ls", "wide"),
]
ANGLE_WORDS: list[tuple[str, Angle]] = [
    ("eye level", "eye-level"),
    ("low", "low"),
    ("worm", "low"),
    ("high", "high"),
    ("overhead", "overhead"),
    ("bird", "overhead"),
    ("top down", "overhead"),
    ("dutch", "dutch"),
    ("canted", "dutch"),
]
NOTE_KEYS = {"camera", "mood", "lighting", "props", "nature", "cast", "environment", "aspect"}
TIMES_OF_DAY = {
    "DAY", "NIGHT", "DAWN", "DUSK", "MORNING", "EVENING", "AFTERNOON", "NOON", "MIDNIGHT",
    "SUNRISE", "SUNSET", "CONTINUOUS", "LATER", "MOMENTS LATER", "GOLDEN HOUR",
}  # fmt: skip
SETTINGS = {"INT": "INT", "EXT": "EXT", "INT/EXT": "INT/EXT", "I/E": "INT/EXT", "EST": "EST"}
HEADING = re.compile(r"^(INT\./EXT|INT/EXT|EXT\./INT|I/E|INT|EXT|EST)\.?\s+(.*)$", re.IGNORECASE)


def parse_camera(text: str) -> Camera | None:
    """A camera direction in words (``wide shot, low angle``; ``CU``); ``None`` when it names no
    shot size and no angle we know."""
    words = " " + re.sub(r"[^a-z]+", " ", text.lower().replace("'s", "")) + " "
    shot = next((size for word, size in SHOT_WORDS if f" {word} " in words), None)
    if shot is None:  # "close-up" and "closeup" read as "close up", "closeup"
        shot = next((size for word, size in SHOT_WORDS if f" {word}" in words), None)
    angle = next((a for word, a in ANGLE_WORDS if f" {word} " in words), None)
    if shot is None and angle is None:
        return None
    return Camera(shot_size=shot or "medium", angle=angle or "eye-level")


def split_list(value: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,;]", value) if part.strip()]


def split_note(text: str) -> tuple[str, str] | None:
    """``Key: value`` of a direction note, the key lowercased, if the key is one we read."""
    key, colon, value = text.partition(":")
    if colon and key.strip().lower() in NOTE_KEYS:
        return key.strip().lower(), value.strip()
    return None


@dataclass(frozen=True)
class Heading:
    setting: str  # INT, EXT, INT/EXT, EST or "" (a forced heading with none)
    location: str
    time_of_day: str | None

    @classmethod
    def parse(cls, text: str) -> Heading:
        """``EXT. LIGHTHOUSE CLIFF - DUSK`` → EXT, LIGHTHOUSE CLIFF, DUSK. The last ``-`` part
        is the time of day when it is one we know."""
        match = HEADING.match(text.strip())
        setting, rest = ("", text.strip()) if match is None else match.groups()
        setting = SETTINGS.get(setting.upper().replace("EXT./INT", "INT/EXT").replace(".", ""), "")
        parts = [p.strip() for p in re.split(r"\s+[-\u2013\u2014]\s+", rest) if p.strip()]
        time = None
        if len(parts) > 1 and parts[-1].upper() in TIMES_OF_DAY:
            time = parts.pop().upper()
        return cls(setting, " - ".join(parts), time)

    def place_names(self) -> list[str]:
        """The names an environment is looked up by: the whole location, then shorter
        (``LIGHTHOUSE - LAMP ROOM``, then ``LIGHTHOUSE``)."""
        parts = self.location.split(" - ")
        return [" - ".join(parts[:n]) for n in range(len(parts), 0, -1)]


@dataclass(frozen=True)
class Named:
    """A name as written, the names to try for it (first the name itself), and where it is."""

    name: str
    line: int | None = None
    path: str | None = None
    tries: tuple[str, ...] = ()

    def candidates(self) -> tuple[str, ...]:
        return self.tries or (self.name,)


@dataclass(frozen=True)
class Spoken:
    speaker: Named
    text: str
    extension: str | None = None
    parenthetical: str | None = None


@dataclass
class SceneDraft:
    """A scene as read, its names not yet resolved."""

    line: int | None = None
    path: str | None = None
    heading: str = ""
    setting: str = ""
    time_of_day: str | None = None
    environment: Named | None = None
    cast: list[Named] = field(default_factory=list)
    nature: list[Named] = field(default_factory=list)
    props: list[Named] = field(default_factory=list)
    mood: str | None = None
    lighting: str | None = None
    camera: Camera | None = None
    action: list[str] = field(default_factory=list)
    dialogue: list[Spoken] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    transitions: list[str] = field(default_factory=list)
    aspect: str | None = None
    regions: list[Region] | None = None

    def add_cast(self, named: Named) -> None:
        """Cast order is the order of first appearance."""
        if all(name_key(c.name) != name_key(named.name) for c in self.cast):
            self.cast.append(named)
