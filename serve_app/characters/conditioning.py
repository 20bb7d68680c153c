"""IP-Adapter conditioning: renders of a soul with a locked identity see its references.

load:    the first conditioned render of a base model loads the adapter into it with
         diffusers' ``load_ip_adapter`` (its image encoder from ``image_encoder/``; a model
         ref like any other, safetensors only); pipelines built from the base share it
embed:   a version's image embedding (the mean of its references' CLIP image embeddings)
         is computed once, cached in the object store under the version, and kept in memory
call:    each job of a call brings its own embedding (``ip_adapter_image_embeds``, one row a
         job, the unconditional rows first), so renders of different identities batch
         together: diffusers would repeat one embedding over the whole batch, so an adapted
         pipeline takes the rows as given (``_rows_as_given``); the adapter's scale is
         the call's (the version's strength: part of the call shape). A job without an
         identity on an adapted pipeline gets a zero embedding at scale 0, which skips the
         adapter's attention.
masks:   a job's cast (``RenderJob.cast``) brings several identities, each with its region:
         its embeds are one row of all of them (``(jobs, identities, embedding)``), its masks
         diffusers' ``IPAdapterMaskProcessor`` output at the render size, shaped
         ``(1, identities, height, width)`` and passed as ``cross_attention_kwargs
         ["ip_adapter_masks"]``, and each identity's strength is its image's scale. One mask
         tensor serves a whole call, so only jobs with the same regions and strengths batch
         together (the call shape).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.characters.verdicts import IdentityConditioning, RegionIdentity
from serve_app.diffusion.pipelines import LOADING
from serve_app.diffusion.sources import ModelManager, ModelNotFound
from serve_app.storage.objects import ObjectStore

KEPT_EMBEDDINGS = 256  # versions' embeddings kept in memory per replica


class IdentityConditioner:
    def __init__(self, manager: ModelManager, objects: ObjectStore | None) -> None:
        self.manager = manager
        self.objects = objects
        self.adapter: str | None = None  # the model ref, from the replica's config
        self.computed = 0  # embeddings computed (not read from the cache): once per version
        self._adapted: dict[int, tuple[Any, Any]] = {}  # id(unet) -> (encoder, processor)
        self._embeddings: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def inputs(
        self, pipe: Any, identities: list[IdentityConditioning | None], guided: bool
    ) -> dict[str, Any]:
        """The pipeline call's IP-Adapter inputs for its jobs' identities (one a job, all at
        one strength); ``guided``: classifier-free guidance doubles the batch."""
        import torch

        wanted = self.adapter is not None and any(i is not None for i in identities)
        if not wanted and id(pipe.unet) not in self._adapted:
            return {}
        if self.adapter is None:
            raise ModelNotFound("this pipeline carries an IP-Adapter but none is configured")
        encoder, processor = self._load(pipe, self.adapter)
        rows = [
            None if identity is None else self.embedding(identity, encoder, processor)
            for identity in identities
        ]
        width = encoder.config.projection_dim
        stacked = np.stack([np.zeros(width, np.float32) if r is None else r for r in rows])
        positive = torch.from_numpy(stacked)[:, None, :]  # (jobs, 1 image, embedding)
        embeds = torch.cat([torch.zeros_like(positive), positive]) if guided else positive
        first = identities[0]
        pipe.set_ip_adapter_scale(0.0 if first is None else first.strength)
        pipe.prepare_ip_adapter_image_embeds = _rows_as_given
        return {"ip_adapter_image_embeds": [embeds.to(pipe.device, pipe.unet.dtype)]}

    def masked_inputs(
        self, pipe: Any, casts: list[list[RegionIdentity]], guided: bool, size: tuple[int, int]
    ) -> dict[str, Any]:
        """The pipeline call's IP-Adapter inputs for jobs that each bring a cast of identities
        in regions (all with the same regions and strengths); ``size``: the render's width and
        height, the size the masks are drawn at."""
        import torch
        from diffusers.image_processor import IPAdapterMaskProcessor

        if self.adapter is None:
            if id(pipe.unet) not in self._adapted:
                return {}  # as a job's one identity: no adapter configured, no conditioning
            raise ModelNotFound("this pipeline carries an IP-Adapter but none is configured")
        encoder, processor = self._load(pipe, self.adapter)
        stacked = np.stack(
            [np.stack([self.embedding(m.identity, encoder, processor) for m in c]) for c in casts]
        )
        positive = torch.from_numpy(stacked)  # (jobs, identities, embedding)
        embeds = torch.cat([torch.zeros_like(positive), positive]) if guided else positive
        cast = casts[0]
        width, height = size
        drawn = IPAdapterMaskProcessor().preprocess(
            region_masks([m.box for m in cast], size), height=height, width=width
        )
        masks = drawn.reshape(1, len(cast), height, width)  # (1, identities, height, width)
        pipe.set_ip_adapter_scale(cast[0].identity.strength)
        strengths = [m.identity.strength for m in cast]
        for attention in pipe.unet.attn_processors.values():
            if "IPAdapter" in type(attention).__name__:
                attention.scale[0] = list(strengths)  # one scale per masked image
        pipe.prepare_ip_adapter_image_embeds = _rows_as_given
        return {
            "ip_adapter_image_embeds": [embeds.to(pipe.device, pipe.unet.dtype)],
            "cross_attention_kwargs": {"ip_adapter_masks": [masks.to(pipe.device)]},
        }

    def embedding(self, identity: IdentityConditioning, encoder: Any, processor: Any) -> np.ndarray:
        """The version's image embedding: from memory, else the object store, else computed
        from its references and stored."""
        assert self.adapter is not None
        key = identity.embeds_key(Path(self.adapter).name)
        with self._lock:
            if key in self._embeddings:
                self._embeddings.move_to_end(key)
                return self._embeddings[key]
        objects = self._objects()
        if objects.exists(key):
            vector = np.load(io.BytesIO(objects.get(key)))
        else:
            vector = self._computed(identity, encoder, processor)
            out = io.BytesIO()
            np.save(out, vector)
            objects.put(key, out.getvalue())
        with self._lock:
            self._embeddings[key] = vector
            while len(self._embeddings) > KEPT_EMBEDDINGS:
                self._embeddings.popitem(last=False)
        return vector

    def _computed(self, identity: IdentityConditioning, encoder: Any, processor: Any) -> Any:
        import torch
        from PIL import Image

        objects = self._objects()
        images = []
        for key in identity.reference_keys:
            with Image.open(io.BytesIO(objects.get(key))) as image:
                images.append(image.convert("RGB"))
        pixels = processor(images=images, return_tensors="pt").pixel_values
        with torch.inference_mode():
            embeds = encoder(pixels.to(encoder.device, encoder.dtype)).image_embeds
        self.computed += 1
        return embeds.float().mean(dim=0).cpu().numpy().astype(np.float32)

    def _load(self, pipe: Any, adapter: str) -> tuple[Any, Any]:
        """The adapter in ``pipe``'s UNet (loaded on its first conditioned call), and the image
        encoder and processor it came with."""
        if id(pipe.unet) not in self._adapted:
            folder = self.manager.ensure(adapter)
            (weights,) = sorted(folder.glob("*.safetensors"))
            with LOADING:  # its image encoder is loaded from disk too
                pipe.load_ip_adapter(
                    str(folder),
                    subfolder="",
                    weight_name=weights.name,
                    image_encoder_folder="image_encoder",
                    local_files_only=True,
                )
            self._adapted[id(pipe.unet)] = (pipe.image_encoder, pipe.feature_extractor)
        return self._adapted[id(pipe.unet)]

    def _objects(self) -> ObjectStore:
        if self.objects is None:
            raise ValueError("this replica has no object store to read identity references from")
        return self.objects


def _rows_as_given(
    ip_adapter_image: Any, ip_adapter_image_embeds: list[Any], device: Any, *_: Any
) -> list[Any]:
    """In place of the pipeline's ``prepare_ip_adapter_image_embeds``, which repeats one
    embedding for every image of the batch: each job's own row, as ``inputs`` laid them out."""
    return [embeds.to(device) for embeds in ip_adapter_image_embeds]


def region_masks(
    boxes: list[tuple[float, float, float, float]], size: tuple[int, int]
) -> list[Any]:
    """One mask image a box (fractions of the frame) at ``size`` (width, height): mode ``L``,
    255 inside, as ``stories.composition.masks`` draws a scene's regions."""
    from PIL import Image, ImageDraw

    width, height = size
    out = []
    for left, top, right, bottom in boxes:
        mask = Image.new("L", size, 0)
        box = (
            round(left * width),
            round(top * height),
            round(right * width),
            round(bottom * height),
        )
        ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
        out.append(mask)
    return out
