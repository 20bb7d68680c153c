"""Selfie places as data, and the place chooser of seed §6 (pure; no Ray, no store)."""

from __future__ import annotations

from serve_app.delivery.places import Used, choose_shot, load_places

LANDMARKS = ["eiffel", "louvre", "montmartre"]
ANGLES = ["closeup", "wide", "high"]


def test_shipped_places_have_paris_and_two_more_cities() -> None:
    places = load_places("config/landmarks.yaml")
    assert {"eiffel", "louvre", "montmartre", "pont_alexandre_iii"} <= set(
        places.cities["paris"].landmarks
    )
    assert len(places.cities) >= 3
    assert {"happy", "sad", "surprised"} <= set(places.moods)
    assert len(places.angles) >= 2
    assert all(words for c in places.cities.values() for words in c.landmarks.values())


def test_new_landmarks_first_in_order() -> None:
    assert choose_shot(LANDMARKS, ANGLES, {}) == ("eiffel", "closeup")
    used = {"eiffel": Used(used_at_ts=5, angle_key="closeup")}
    assert choose_shot(LANDMARKS, ANGLES, used) == ("louvre", "closeup")


def test_when_all_used_the_least_recent_comes_back_from_the_next_angle() -> None:
    used = {
        "eiffel": Used(used_at_ts=30, angle_key="closeup"),
        "louvre": Used(used_at_ts=10, angle_key="wide"),
        "montmartre": Used(used_at_ts=20, angle_key="closeup"),
    }
    assert choose_shot(LANDMARKS, ANGLES, used) == ("louvre", "high")
    used["louvre"] = Used(used_at_ts=40, angle_key="high")
    assert choose_shot(LANDMARKS, ANGLES, used) == ("montmartre", "wide")
    used["montmartre"] = Used(used_at_ts=50, angle_key="high")
    used["eiffel"] = Used(used_at_ts=35, angle_key="high")
    assert choose_shot(LANDMARKS, ANGLES, used) == ("eiffel", "closeup")  # wraps around


def test_an_angle_no_longer_configured_restarts_from_the_first() -> None:
    used = {name: Used(used_at_ts=1, angle_key="gone") for name in LANDMARKS}
    assert choose_shot(LANDMARKS, ANGLES, used) == ("eiffel", "closeup")
