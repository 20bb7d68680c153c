"""One soul's vectors: a faiss index with its keys' hashes, row by row, exact or approximate
(IVF over 8-bit scalar-quantized vectors), and its snapshot format (a zip that fails to load
when damaged). ``key_index.SoulIndexes`` keeps one per soul in each Catalog replica.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

HASH_BYTES = 20  # a key's sha1: its pk_id is "<soul_id>:<hex of these>"


class KeyIndexConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approximate_from: int = Field(
        default=50_000,
        ge=1,
        description="Keys in a soul from which its index is approximate and snapshotted "
        "(below, exact search is fast and a build from the keys takes under a second).",
    )
    lists: int = Field(
        default=1024, ge=1, description="IVF lists (clusters) of an approximate index."
    )
    probe: int = Field(
        default=16,
        ge=1,
        description="IVF lists searched per lookup (`soul bench probes`, 10^6 keys: 16 finds "
        "the nearest key 99.6% of the time in 0.6 ms, 32 100% in 1.2 ms).",
    )
    snapshot_every: int = Field(
        default=10_000,
        ge=1,
        description="Keys added to an approximate index after which a new snapshot is written.",
    )
    embedding_id: str = Field(
        default="all-MiniLM-L6-v2:cue-tokens",
        description="Names the embedder and the embedded text: a snapshot made under another "
        "id is ignored (rebuild the keys' embeddings when changing either).",
    )


def as_unit_vector(embedding: list[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(embedding, dtype=np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


class KeyIndex:
    """One soul's vectors with their keys' hashes, row by row; ``log_seen``: how far this
    replica has read the soul's key log; ``built_from``: the point of the log its keys were
    read at (a rebuild marker after it makes the index stale)."""

    def __init__(
        self,
        soul_id: str,
        index: faiss.Index,
        log_seen: str,
        hashes: bytes = b"",
        built_from: str = "",
    ):
        self.soul_id, self.index, self.log_seen = soul_id, index, log_seen
        self.built_from = built_from
        self._hashes = bytearray(hashes)
        # First 8 bytes of each hash: a collision would only leave a key out (a missed reuse).
        self._known = {int.from_bytes(h[:8]) for h in self._rows_of(bytes(hashes))}
        self.added_since_snapshot = 0
        self.reread_at_ms = 0
        self.compressing = False

    @staticmethod
    def _rows_of(hashes: bytes) -> Iterator[bytes]:
        return (hashes[i : i + HASH_BYTES] for i in range(0, len(hashes), HASH_BYTES))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def exact(self) -> bool:
        return isinstance(self.index, faiss.IndexFlat)

    def knows(self, pk_id: str) -> bool:
        return int.from_bytes(_hash_of(pk_id)[:8]) in self._known

    def add(self, keys: list[tuple[str, bytes]]) -> None:
        """Keys (pk_id, embedding) this index does not know yet, in one faiss call; a key
        without an embedding (``ensure_key``'s) is never found by similarity."""
        # A dict: a key logged twice (a retried create) may come twice in one page.
        new = list({pk: embed for pk, embed in keys if embed and not self.knows(pk)}.items())
        if not new:
            return
        vectors = np.frombuffer(b"".join(embed for _, embed in new), dtype=np.float32)
        self.index.add(vectors.reshape(len(new), -1))
        for pk, _ in new:
            digest = _hash_of(pk)
            self._hashes += digest
            self._known.add(int.from_bytes(digest[:8]))
        self.added_since_snapshot += len(new)

    def nearest(self, vector: np.ndarray) -> tuple[str, float] | None:
        if not len(self):
            return None
        scores, rows = self.index.search(vector.reshape(1, -1), 1)
        row = int(rows[0][0])
        if row < 0:  # an approximate index found nothing in the lists it searched
            return None
        digest = self._hashes[row * HASH_BYTES : (row + 1) * HASH_BYTES]
        return f"{self.soul_id}:{digest.hex()}", float(scores[0][0])

    def vectors(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of an exact index, copied."""
        return self.index.reconstruct_n(start, stop - start)

    def snapshot(self, embedding_id: str) -> tuple[np.ndarray, bytes, dict]:
        """A consistent copy, taken on the event loop (the thread that adds): the index's
        bytes, the hashes and what they describe."""
        meta = {
            "soul_id": self.soul_id,
            "embedding_id": embedding_id,
            "dim": self.index.d,
            "log_seen": self.log_seen,
            "built_from": self.built_from,
            "keys": len(self),
        }
        return faiss.serialize_index(self.index), bytes(self._hashes), meta


def _hash_of(pk_id: str) -> bytes:
    return bytes.fromhex(pk_id.rpartition(":")[2])


def build_approximate(vectors: np.ndarray, config: KeyIndexConfig) -> faiss.Index:
    """IVF over 8-bit scalar-quantized vectors, trained on ``vectors`` (which it then holds);
    fewer lists than configured where there are too few vectors to train them (faiss wants 39
    per list)."""
    dim = vectors.shape[1]
    lists = min(config.lists, max(1, len(vectors) // 39))
    index = faiss.index_factory(dim, f"IVF{lists},SQ8", faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    faiss.extract_index_ivf(index).nprobe = config.probe
    return index


def encode_snapshot(index_bytes: np.ndarray, hashes: bytes, meta: dict) -> bytes:
    out = io.BytesIO()
    np.savez(  # a zip whose members carry a CRC-32: a damaged snapshot fails to load
        out,
        index=index_bytes,
        hashes=np.frombuffer(hashes, dtype=np.uint8),
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    )
    return out.getvalue()


def decode_snapshot(data: bytes, config: KeyIndexConfig, soul_id: str, dim: int) -> KeyIndex:
    """The snapshot as an index; ``ValueError`` when it is not one of this soul, embedding and
    width, or does not hold what it says."""
    with np.load(io.BytesIO(data)) as parts:
        meta = json.loads(parts["meta"].tobytes())
        expected = {"soul_id": soul_id, "embedding_id": config.embedding_id, "dim": dim}
        if {k: meta.get(k) for k in expected} != expected:
            raise ValueError(f"snapshot of {meta} does not match {expected}")
        index = faiss.deserialize_index(parts["index"])
        hashes = parts["hashes"].tobytes()
    if index.ntotal != meta["keys"] or len(hashes) != meta["keys"] * HASH_BYTES:
        raise ValueError("snapshot holds another number of keys than it says")
    faiss.extract_index_ivf(index).nprobe = config.probe
    return KeyIndex(soul_id, index, meta["log_seen"], hashes, meta.get("built_from", ""))
