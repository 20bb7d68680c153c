"""The labelled cue pairs (serve_app/bench/cue_pairs.yaml) at the shipped threshold, embedded
with the real Embedder model: what `soul bench matching` chose, held as a test."""

from __future__ import annotations

from typing import Any

from deployments.catalog import CatalogConfig
from serve_app.bench.matching import cosines, cue_text, load_pairs, shares_key


def test_near_misses_never_share_a_key_by_similarity_and_most_paraphrases_do(
    embedder: Any,
) -> None:
    engine = embedder.engine.engine  # the EmbedderEngine behind the local handle
    threshold = CatalogConfig().similarity_threshold
    same, different = load_pairs()
    assert len(same) + len(different) >= 60
    cos_same = cosines(engine.embed, cue_text, same)
    cos_diff = cosines(engine.embed, cue_text, different)
    pairs = zip(different, cos_diff, strict=True)
    reused = [p for p, c in pairs if shares_key(p, c, threshold, True)]
    # Only near misses with one exact key ("a dog chasing a cat" / "a cat chasing a dog":
    # the seed's sorted-token key) share one; no similarity reuse is false.
    assert all(cue_text(a) == cue_text(b) for a, b in reused), reused
    shared = [shares_key(p, c, threshold, True) for p, c in zip(same, cos_same, strict=True)]
    assert sum(shared) / len(same) >= 0.8
