"""`soul bench matching`: which cue text to embed and which threshold, on labelled cue pairs.

Each candidate text is embedded with the real Embedder model; for each threshold (with and
without the contrast check) it reports recall (paraphrases that share a key) and false reuse
(near misses that share one: a user sent a picture of something they did not ask for).
"""

from __future__ import annotations

import argparse
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from serve_app.bench.common import write_report
from serve_app.prompts import STOPWORDS, may_share_key, normalize

PAIRS = Path(__file__).with_name("cue_pairs.yaml")
FALSE_REUSE_WEIGHT = 3  # a false reuse costs as much as three missed reuses
Pair = tuple[str, str]


def _words(cue: str) -> list[str]:
    text = unicodedata.normalize("NFKC", cue).lower()
    return re.sub(r"[^\w\s]|_", " ", text).split()


def cue_text(cue: str) -> str:
    return normalize(cue, [])[1]


CANDIDATES: dict[str, Callable[[str], str]] = {
    "cue tokens: sorted, no stopwords (shipped)": cue_text,
    "natural order, no stopwords": lambda cue: " ".join(
        w for w in _words(cue) if w not in STOPWORDS
    ),
    "as written": lambda cue: " ".join(_words(cue)),
}


def load_pairs() -> tuple[list[Pair], list[Pair]]:
    """(paraphrases, near misses)."""
    data = yaml.safe_load(PAIRS.read_text())
    same: list[Pair] = [(a, b) for a, b in data["same"]]
    different: list[Pair] = [(a, b) for group in data["different"].values() for a, b in group]
    return same, different


def cosines(
    embed: Callable[[list[str]], list[list[float]]],
    text_of: Callable[[str], str],
    pairs: list[Pair],
) -> np.ndarray:
    a = np.asarray(embed([text_of(x) for x, _ in pairs]))
    b = np.asarray(embed([text_of(y) for _, y in pairs]))
    return (a * b).sum(axis=1)


def shares_key(pair: Pair, cosine: float, threshold: float, contrasts: bool) -> bool:
    """What the catalog decides for the second cue once the first has a key."""
    first, second = cue_text(pair[0]), cue_text(pair[1])
    if first == second:  # the same exact key, whatever is embedded
        return True
    if contrasts:
        return may_share_key(cosine, threshold, second, first)
    return cosine >= threshold


def rates(pairs: list[Pair], cos: np.ndarray, threshold: float, contrasts: bool) -> float:
    shared = [shares_key(p, c, threshold, contrasts) for p, c in zip(pairs, cos, strict=True)]
    return float(np.mean(shared))


def matching_main(ns: argparse.Namespace) -> int:
    from deployments.embedder import EmbedderEngine

    embedder = EmbedderEngine()
    same, different = load_pairs()
    rows: list[dict[str, Any]] = []
    for name, text_of in CANDIDATES.items():
        cos_same = cosines(embedder.embed, text_of, same)
        cos_diff = cosines(embedder.embed, text_of, different)
        for contrasts in (False, True):
            for threshold in np.round(np.arange(0.75, 0.951, 0.01), 2):
                recall = rates(same, cos_same, threshold, contrasts)
                false_reuse = rates(different, cos_diff, threshold, contrasts)
                rows.append(
                    {
                        "text": name,
                        "contrast_check": contrasts,
                        "threshold": float(threshold),
                        "recall": round(recall, 3),
                        "false_reuse": round(false_reuse, 3),
                        "score": round(recall - FALSE_REUSE_WEIGHT * false_reuse, 3),
                    }
                )
    print(f"\nsoul bench matching: {len(same)} paraphrases, {len(different)} near misses")
    print(f"score = recall - {FALSE_REUSE_WEIGHT} x false reuse; best threshold per text")
    print(f"{'text':<46}{'contrasts':>10}{'threshold':>10}{'recall':>8}{'false':>8}{'score':>8}")
    for name in CANDIDATES:
        for contrasts in (False, True):
            mine = [r for r in rows if r["text"] == name and r["contrast_check"] == contrasts]
            # On a tie, the lower threshold: as few false reuses, and more reuse elsewhere.
            best = max(mine, key=lambda r: (r["score"], -r["threshold"]))
            print(
                f"{name:<46}{'on' if contrasts else 'off':>10}{best['threshold']:>10.2f}"
                f"{best['recall']:>8.3f}{best['false_reuse']:>8.3f}{best['score']:>8.3f}"
            )
    write_report(ns, {"scenario": "matching", "rows": rows})
    return 0
