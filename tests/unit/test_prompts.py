"""Unit tests for serve_app.prompts: normalization, key ids, style ids, render prompts."""

from __future__ import annotations

import hashlib

import pytest

from serve_app.prompts import (
    contrasts_agree,
    cue_tokens,
    key_hash,
    normalize,
    pk_id,
    render_prompt,
    renormalize,
    soul_prefix_bounds,
    style_id,
)
from serve_app.schemas import StyleProfile

TAGS = ["anime", "pastel", "outlines"]


def style(**overrides: object) -> StyleProfile:
    fields: dict[str, object] = {"soul_id": "nova", "base_model_ref": "tiny-sdxl", **overrides}
    return StyleProfile.model_validate(fields)


def test_cue_tokens_lowercase_strip_squash_stopwords_sort_dedupe() -> None:
    cue = "  Show me THE Red,   red  Penguin!!  on a   Bike_Path... "
    assert cue_tokens(cue) == ["bike", "path", "penguin", "red"]


@pytest.mark.parametrize("cue", ["", "   ", "!!! ... ???", "the a of", "Please, show ME the..."])
def test_cue_of_only_stopwords_or_punctuation_has_no_tokens(cue: str) -> None:
    assert cue_tokens(cue) == []
    assert normalize(cue, [])[1] == ""


def test_unicode_is_nfkc_normalized_and_accents_kept() -> None:
    # Full-width letters fold to ASCII under NFKC; the ligature U+FB01 becomes "fi".
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in "PENGUIN")
    assert full_width != "PENGUIN"
    assert cue_tokens(f"{full_width} \ufb01sh") == ["fish", "penguin"]
    assert cue_tokens("Crème Brûlée") == ["brûlée", "crème"]
    assert cue_tokens("crème") != cue_tokens("creme")
    # A decomposed "é" (e + combining acute) equals the composed one.
    assert cue_tokens("cafe\u0301") == cue_tokens("café") == ["café"]


def test_equivalent_cues_share_key_norm_and_pk_id() -> None:
    norm_a, cue_a = normalize("A penguin!", TAGS)
    norm_b, cue_b = normalize("penguin", TAGS)
    assert norm_a == norm_b
    assert cue_a == cue_b == "penguin"
    assert pk_id("nova", norm_a) == pk_id("nova", norm_b)


def test_word_order_does_not_matter() -> None:
    assert normalize("red penguin", TAGS) == normalize("Penguin, red.", TAGS)


def test_different_words_give_a_different_key() -> None:
    assert normalize("red penguin", TAGS)[0] != normalize("blue penguin", TAGS)[0]


def test_same_cue_under_another_soul_has_another_pk_id() -> None:
    norm, _ = normalize("penguin", TAGS)
    assert pk_id("nova", norm) != pk_id("valentina", norm)
    assert pk_id("nova", norm).startswith("nova:")


def test_style_tags_change_key_norm_but_not_cue_text() -> None:
    norm_a, cue_a = normalize("penguin", ["anime", "pastel"])
    norm_b, cue_b = normalize("penguin", ["noir", "ink"])
    assert norm_a != norm_b
    assert cue_a == cue_b == "penguin"
    assert "anime" not in cue_a and "noir" not in cue_b
    assert "anime" in norm_a and "noir" in norm_b


def test_style_tags_are_normalized_too() -> None:
    assert normalize("penguin", ["Pastel", "ANIME!"])[0] == normalize("penguin", TAGS[:2])[0]


def test_no_style_tags_means_key_norm_is_the_cue_text() -> None:
    assert normalize("A penguin!", []) == ("penguin", "penguin")


def test_key_hash_is_sha1_hex_of_the_norm() -> None:
    norm, _ = normalize("café penguin", TAGS)
    expected = hashlib.sha1(norm.encode("utf-8")).hexdigest()
    assert key_hash(norm) == expected
    assert len(expected) == 40
    assert pk_id("nova", norm) == f"nova:{expected}"


def test_soul_prefix_bounds_bracket_only_that_soul() -> None:
    low, high = soul_prefix_bounds("nova")
    for cue in ["penguin", "red car", "café", ""]:
        assert low <= pk_id("nova", normalize(cue, TAGS)[0]) < high
    for other in ["nova2", "nov", "nova-x", "nova_x", "novb", "a", "zeta"]:
        assert not (low <= pk_id(other, "penguin") < high), other
    assert not (low <= "nova" < high)


def test_style_id_is_stable_and_order_free_for_loras() -> None:
    a = style(lora_ids=["loraA@v1", "loraB@v2"])
    b = style(lora_ids=["loraB@v2", "loraA@v1"])
    assert style_id(a) == style_id(b) == style_id(a.model_copy())
    assert len(style_id(a)) == 16


def test_style_id_changes_with_base_model_and_lora_set() -> None:
    base = style(lora_ids=["loraA@v1"])
    assert style_id(base) != style_id(style(base_model_ref="other", lora_ids=["loraA@v1"]))
    assert style_id(base) != style_id(style(lora_ids=["loraA@v2"]))
    assert style_id(base) != style_id(style())


def test_style_id_ignores_what_a_renderer_need_not_load() -> None:
    base = style(lora_ids=["loraA@v1"])
    other = style(
        lora_ids=["loraA@v1"], style_tags=["noir"], negatives=["blurry"], palette={"hint": "ink"}
    )
    assert style_id(base) == style_id(other)


def test_render_prompt_includes_cue_tags_palette_and_negatives() -> None:
    s = style(
        style_tags=["anime", "pastel"],
        palette={"hint": "soft pastel colours", "colors": ["#f7c6d9", "#bde0fe"]},
        negatives=["blurry", "lowres", "watermark"],
    )
    prompt, negative = render_prompt(s, "  a   penguin on ice ")
    assert prompt == "a penguin on ice, anime, pastel, soft pastel colours, palette #f7c6d9 #bde0fe"
    assert negative == "blurry, lowres, watermark"


def test_render_prompt_without_palette_or_negatives() -> None:
    prompt, negative = render_prompt(style(style_tags=["noir"]), "penguin")
    assert prompt == "penguin, noir"
    assert negative == ""


@pytest.mark.parametrize(
    ("a", "b", "agree"),
    [
        ("wearing a red scarf", "in a red scarf", True),
        ("wearing a red scarf", "wearing a blue scarf", False),
        ("wearing a grey scarf", "wearing a gray scarf", True),  # one meaning, two spellings
        ("one cat on the sofa", "three cats on the sofa", False),
        ("3 candles", "three candles", True),
        ("reading under a tree", "reads beneath a tree", True),
        ("sitting under the table", "sitting on the table", False),  # "on" is a stopword
        ("a street at night", "a street at noon", False),
        ("a garden in autumn", "a garden in the fall", True),
    ],
)
def test_contrasts_agree_on_colour_count_place_and_time(a: str, b: str, agree: bool) -> None:
    assert contrasts_agree(normalize(a, [])[1], normalize(b, [])[1]) is agree


def test_a_stored_key_is_renormalized_part_by_part() -> None:
    key_norm = normalize("The penguin, sliding on ICE!", ["Anime", "pastel"])[0]
    assert renormalize(key_norm) == key_norm  # today's rules: nothing changes
    assert renormalize("on penguin the | anime pastel") == "penguin | anime pastel"
    assert renormalize("Ice penguin") == "ice penguin"  # a key without tags stays without
