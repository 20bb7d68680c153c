"""Prompt keys (seed §5): deterministic normalization, key hashing, style ids, render prompts."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata

from serve_app.schemas import StyleProfile

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "i",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "please",
        "show",
        "so",
        "some",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "this",
        "those",
        "to",
        "was",
        "we",
        "were",
        "with",
        "you",
        "your",
    ]
)
_NOT_WORD = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def cue_tokens(cue: str) -> list[str]:
    """Lowercase, strip punctuation, squash spaces, drop stopwords, sort (and de-duplicate)."""
    text = unicodedata.normalize("NFKC", cue).lower()
    words = _SPACES.split(_NOT_WORD.sub(" ", text).strip())
    return sorted({w for w in words if w and w not in STOPWORDS})


def normalize(cue: str, style_tags: list[str]) -> tuple[str, str]:
    """Return ``(key_norm, cue_text)``: the key text with the soul's tags, and the cue part alone.

    Only ``cue_text`` is embedded: the soul's shared tags would inflate every similarity.
    """
    cue_text = " ".join(cue_tokens(cue))
    tags = " ".join(cue_tokens(" ".join(style_tags)))
    return (f"{cue_text} | {tags}" if tags else cue_text), cue_text


def _meanings(groups: str) -> dict[str, str]:
    """Word -> meaning, from comma-separated groups of words of one meaning (named by the first)."""
    return {word: group.split()[0] for group in groups.split(",") for word in group.split()}


# Words whose difference changes the picture while barely moving a sentence embedding
# (measured with `soul bench matching`): colours, counts, places, times.
CONTRASTS: dict[str, dict[str, str]] = {
    "colour": _meanings(
        "red, blue, green, yellow, black, white, pink, purple, orange, brown, golden, silver, "
        "grey gray"
    ),
    "count": _meanings(
        "zero 0, one 1 single lone alone, two 2 pair couple, three 3, four 4, five 5, six 6, "
        "seven 7, eight 8, nine 9, ten 10, eleven 11, twelve 12 dozen"
    ),
    "place": _meanings(
        "below under beneath underneath, above over, top atop, inside within, outside out, "
        "near beside next, behind, front, left, right, far"
    ),
    "time": _meanings(
        "morning, noon, afternoon, evening, night, midnight, dawn, dusk, sunrise, sunset, "
        "winter, summer, spring, autumn fall, breakfast, lunch, dinner"
    ),
}


def contrasts_agree(cue_text: str, other_cue_text: str) -> bool:
    """Whether two normalized cues say the same of every contrast (colour, count, place, time):
    a similar key whose contrasts differ is another picture, not a paraphrase."""
    a, b = set(cue_text.split()), set(other_cue_text.split())
    return all(
        {m for w, m in words.items() if w in a} == {m for w, m in words.items() if w in b}
        for words in CONTRASTS.values()
    )


def may_share_key(cosine: float, threshold: float, cue_text: str, other_cue_text: str) -> bool:
    """Whether a cue may reuse a similar key: close enough, and no contrast differs."""
    return cosine >= threshold and contrasts_agree(cue_text, other_cue_text)


def cue_part(key_norm: str) -> str:
    """The cue tokens of a key's normalized text, without the soul's tags."""
    return key_norm.partition(" | ")[0]


def renormalize(key_norm: str) -> str:
    """A stored key's text normalized by today's rules: its cue part and its tags part each
    tokenized again (what the key means, cue and tags, stays as it was written)."""
    cue, _, tags = key_norm.partition(" | ")
    cue_text, tag_text = " ".join(cue_tokens(cue)), " ".join(cue_tokens(tags))
    return f"{cue_text} | {tag_text}" if tag_text else cue_text


def key_hash(key_norm: str) -> str:
    return hashlib.sha1(key_norm.encode("utf-8")).hexdigest()


def pk_id(soul_id: str, key_norm: str) -> str:
    return f"{soul_id}:{key_hash(key_norm)}"


def soul_prefix_bounds(soul_id: str) -> tuple[str, str]:
    """``[low, high)`` of every pk_id of a soul, for a primary-key range scan (':' + 1 == ';')."""
    return f"{soul_id}:", f"{soul_id};"


def style_id(style: StyleProfile) -> str:
    """Stable id of what a renderer must load: base model + LoRA set (order-free) + weights."""
    spec = {"base": style.base_model_ref, "loras": sorted(style.lora_ids)}
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def render_prompt(style: StyleProfile, cue: str) -> tuple[str, str]:
    """``(prompt, negative_prompt)``: the cue in the soul's look."""
    parts = [" ".join(cue.split()), *style.style_tags]
    hint = style.palette.get("hint")
    if isinstance(hint, str) and hint:
        parts.append(hint)
    colors = style.palette.get("colors")
    if isinstance(colors, list) and colors:
        parts.append("palette " + " ".join(str(c) for c in colors))
    return ", ".join(parts), ", ".join(style.negatives)
