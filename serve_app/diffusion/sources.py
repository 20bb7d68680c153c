"""Model manager: turns a model reference into a verified local file or folder.

References:
- ``civitai:<model_version_id>``: CivitAI's REST API gives the version's primary file, its format
  and its SHA256; the file is downloaded once (bearer token from settings) into the cache folder,
  streamed to a temp file with a progress bar, verified, and renamed into place. With a mirror
  (``SOUL_MODEL_CACHE_URL``), a download is also copied there with its record (the SHA256), and a
  node that lacks the file copies it from the mirror first, verified against that record; a copy
  that does not verify is refused and the file fetched from CivitAI again (and mirrored anew).
- an absolute path, or a tag under the models folder: a diffusers pipeline folder
  (``model_index.json``), a diffusers model folder (``config.json`` beside its safetensors, e.g. a
  motion adapter), a single ``.safetensors`` file (``<tag>.safetensors``) or an ONNX graph
  (``<tag>.onnx``: background removal).

Only safetensors are ever accepted: a PickleTensor, a ``.ckpt/.pt/.bin`` file, or a file whose
bytes are not a safetensors header is refused, and a checksum mismatch deletes the download.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import struct
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from serve_app.errors import UnusableSource
from serve_app.settings import Settings
from serve_app.storage import open_object_store
from serve_app.storage.objects import ObjectStore

log = logging.getLogger("ray.serve")

CIVITAI = re.compile(r"^civitai:(\d{1,12})$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,199}$")
_CHUNK = 1 << 20


class ModelError(UnusableSource):
    """A model reference that cannot be used."""


class ModelNotFound(ModelError, LookupError):
    pass


class UnsafeModelFormat(ModelError):
    pass


class ModelTooLarge(ModelError):
    status_code = 413


class ModelSourceUnavailable(ModelError):
    """CivitAI unreachable, failing, or refusing our token: not the client's fault."""

    status_code = 502


class ChecksumMismatch(ModelError):
    status_code = 502


class RemoteFile(BaseModel):
    """What CivitAI says about a model version's primary file."""

    version_id: str
    name: str
    sha256: str
    size_bytes: int
    download_url: str


class ModelManager:
    def __init__(
        self,
        models_dir: Path,
        *,
        civitai_url: str = "https://civitai.com",
        civitai_token: str = "",
        max_bytes: int = 8 << 30,
        timeout_s: float = 30.0,
        mirror: ObjectStore | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.mirror = mirror
        self.civitai_url = civitai_url.rstrip("/")
        self.civitai_token = civitai_token
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    # ---- resolving ------------------------------------------------------------------------
    def ensure(self, ref: str) -> Path:
        """A verified local path for ``ref``, downloading it first if it is a new CivitAI ref."""
        if match := CIVITAI.match(ref):
            return self._ensure_civitai(match.group(1))
        return self.local(ref)

    def check_remote(self, ref: str) -> None:
        """Raise if a CivitAI ref cannot be used, without downloading it (a metadata read).

        Local refs are checked where they load: the models folder lives on the render nodes.
        """
        if (match := CIVITAI.match(ref)) and not self._cached(match.group(1)):
            self.describe(match.group(1))

    def local(self, ref: str) -> Path:
        """A diffusers folder or a safetensors file, by absolute path or tag."""
        if ref.startswith("/"):
            candidates = [Path(ref)]
        elif _TAG.match(ref):
            candidates = [
                self.models_dir / ref,
                self.models_dir / f"{ref}.safetensors",
                self.models_dir / f"{ref}.onnx",
            ]
        else:
            raise ModelNotFound(f"model {ref!r}: not civitai:<id>, an absolute path or a tag")
        for path in candidates:
            if (path / "model_index.json").is_file():
                return path
            if (path / "config.json").is_file():
                return _model_folder(path)
            if path.is_file() and path.suffix == ".onnx":  # a protobuf graph: nothing unpickled
                return path
            if (path / "image_encoder" / "config.json").is_file():  # an IP-Adapter folder
                _model_folder(path / "image_encoder")
                return _model_folder(path, "safetensors weights beside image_encoder/")
            if path.is_file():
                require_safetensors(path)
                return path
        where = "at that path" if ref.startswith("/") else "in the models folder"
        raise ModelNotFound(  # the models folder's own path stays out of what clients read
            f"model {ref!r} not found: expected a diffusers folder (model_index.json or "
            f"config.json) or a .safetensors file {where}"
        )

    # ---- CivitAI --------------------------------------------------------------------------
    def describe(self, version_id: str) -> RemoteFile:
        """The version's primary file, refused unless it is safetensors with a SHA256."""
        data = self._get_json(f"{self.civitai_url}/api/v1/model-versions/{version_id}", version_id)
        files = data.get("files") or []
        primary = next((f for f in files if f.get("primary")), files[0] if files else None)
        if primary is None:
            raise ModelNotFound(f"civitai:{version_id} has no files")
        name = str(primary.get("name", ""))
        file_format = (primary.get("metadata") or {}).get("format", "")
        if file_format != "SafeTensor" or not name.endswith(".safetensors"):
            raise UnsafeModelFormat(
                f"civitai:{version_id} is {name!r} ({file_format or 'unknown format'}): only "
                "safetensors are accepted, never pickle checkpoints"
            )
        sha256 = str((primary.get("hashes") or {}).get("SHA256", "")).lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise UnsafeModelFormat(f"civitai:{version_id} publishes no SHA256 to verify against")
        size = int(float(primary.get("sizeKB", 0)) * 1024)
        if size > self.max_bytes:
            raise ModelTooLarge(
                f"civitai:{version_id} is {size >> 20} MiB, "
                f"over the {self.max_bytes >> 20} MiB limit"
            )
        return RemoteFile(
            version_id=version_id,
            name=Path(name).name,
            sha256=sha256,
            size_bytes=size,
            download_url=str(primary.get("downloadUrl", "")),
        )

    def _folder(self, version_id: str) -> Path:
        return self.models_dir / "civitai" / version_id

    def _cached(self, version_id: str) -> Path | None:
        """The verified file of an earlier download: its record names it and its size."""
        record = self._folder(version_id) / "version.json"
        if not record.is_file():
            return None
        remote = RemoteFile.model_validate_json(record.read_text())
        path = self._folder(version_id) / remote.name
        return path if path.is_file() and path.stat().st_size == remote.size_bytes else None

    def _ensure_civitai(self, version_id: str) -> Path:
        if cached := self._cached(version_id):
            return cached
        if self.mirror is not None and (mirrored := self._from_mirror(self.mirror, version_id)):
            return mirrored
        path, remote = self._fetch_civitai(version_id)
        if self.mirror is not None:
            self._to_mirror(self.mirror, remote, path)
        return path

    def _fetch_civitai(self, version_id: str) -> tuple[Path, RemoteFile]:
        remote = self.describe(version_id)
        folder = self._folder(version_id)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / remote.name
        part = folder / f".{remote.name}.{secrets.token_hex(4)}.part"
        try:
            digest, size = self._download(remote, part)
            if digest != remote.sha256:
                raise ChecksumMismatch(
                    f"civitai:{version_id}: SHA256 {digest} does not match the published "
                    f"{remote.sha256}; the download was deleted"
                )
            require_safetensors(part)
            os.replace(part, final)
        finally:
            part.unlink(missing_ok=True)
        remote = remote.model_copy(update={"size_bytes": size})
        _write_atomically(folder / "version.json", remote.model_dump_json(indent=2).encode())
        log.info("civitai:%s downloaded and verified (%d bytes)", version_id, size)
        return final, remote

    # ---- the mirror -----------------------------------------------------------------------
    def _from_mirror(self, mirror: ObjectStore, version_id: str) -> Path | None:
        """The mirror's copy, verified against the SHA256 recorded with it; None when there is
        none, or when it does not verify (it is then fetched from CivitAI and mirrored anew)."""
        try:
            record = RemoteFile.model_validate_json(
                mirror.get(f"civitai/{version_id}/version.json")
            )
        except FileNotFoundError:
            return None
        folder = self._folder(version_id)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / record.name
        part = folder / f".{record.name}.{secrets.token_hex(4)}.part"
        try:
            mirror.get_file(f"civitai/{version_id}/{record.name}", part)
            digest = _sha256(part)
            if digest != record.sha256:
                log.warning(
                    "civitai:%s: the mirror's copy has SHA256 %s, not %s: refused",
                    version_id,
                    digest,
                    record.sha256,
                )
                return None
            require_safetensors(part)
            os.replace(part, final)
        except (OSError, UnsafeModelFormat) as exc:
            log.warning("civitai:%s: the mirror's copy is unusable (%s)", version_id, exc)
            return None
        finally:
            part.unlink(missing_ok=True)
        _write_atomically(folder / "version.json", record.model_dump_json(indent=2).encode())
        log.info("civitai:%s copied from the mirror and verified", version_id)
        return final

    @staticmethod
    def _to_mirror(mirror: ObjectStore, remote: RemoteFile, path: Path) -> None:
        """The file, then its record: a copy without its record is never read. A mirror that
        fails costs the next node a download, not this one its model."""
        folder = f"civitai/{remote.version_id}"
        try:
            mirror.put_file(f"{folder}/{remote.name}", path)
            mirror.put(f"{folder}/version.json", remote.model_dump_json(indent=2).encode())
        except Exception:
            log.warning("civitai:%s could not be mirrored", remote.version_id, exc_info=True)

    def _download(self, remote: RemoteFile, part: Path) -> tuple[str, int]:
        from tqdm import tqdm

        digest, size = hashlib.sha256(), 0
        with (
            self._client() as client,
            client.stream("GET", remote.download_url) as response,
        ):
            self._raise_for_status(response, remote.version_id)
            total = int(response.headers.get("content-length") or remote.size_bytes or 0)
            with (
                part.open("wb") as out,
                tqdm(
                    total=total or None,
                    unit="B",
                    unit_scale=True,
                    desc=f"civitai:{remote.version_id}",
                    disable=None,  # a bar on a terminal, silence in replica logs
                ) as bar,
            ):
                for chunk in response.iter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise ModelTooLarge(
                            f"civitai:{remote.version_id}: download exceeds the "
                            f"{self.max_bytes >> 20} MiB limit"
                        )
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
        return digest.hexdigest(), size

    def _get_json(self, url: str, version_id: str) -> dict[str, Any]:
        with self._client() as client:
            try:
                response = client.get(url)
            except Exception as exc:  # connection refused, DNS, timeout
                raise ModelSourceUnavailable(
                    f"civitai:{version_id}: CivitAI unreachable ({type(exc).__name__})"
                ) from exc
            self._raise_for_status(response, version_id)
            data: dict[str, Any] = response.json()
            return data

    def _client(self) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.civitai_token}"} if self.civitai_token else {}
        # httpx drops Authorization when a redirect leaves the host (CivitAI → its CDN).
        return httpx.Client(headers=headers, timeout=self.timeout_s, follow_redirects=True)

    @staticmethod
    def _raise_for_status(response: Any, version_id: str) -> None:
        code = response.status_code
        if code == 404:
            raise ModelNotFound(f"civitai:{version_id}: no such model version on CivitAI")
        if code in (401, 403):
            raise ModelSourceUnavailable(
                f"civitai:{version_id}: CivitAI refused the request ({code}); check "
                "SOUL_CIVITAI_TOKEN"
            )
        if code >= 400:
            raise ModelSourceUnavailable(f"civitai:{version_id}: CivitAI answered {code}")


def require_safetensors(path: Path) -> None:
    """Refuse anything whose bytes are not a safetensors file (pickles above all)."""
    if path.suffix in {".ckpt", ".pt", ".pth", ".bin", ".pkl"}:
        raise UnsafeModelFormat(f"{path.name}: pickle checkpoints are never loaded")
    with path.open("rb") as f:
        head = f.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        header = f.read(min(length, 100_000_000)) if 0 < length <= path.stat().st_size else b""
    try:
        json.loads(header)
    except ValueError as exc:
        raise UnsafeModelFormat(f"{path.name}: not a safetensors file") from exc


def _model_folder(path: Path, where: str = "safetensors weights beside config.json") -> Path:
    """A diffusers model folder with safetensors weights; a pickle beside them is never read."""
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise UnsafeModelFormat(f"{path.name}: no {where} (pickle checkpoints are never loaded)")
    for weight in weights:
        require_safetensors(weight)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def model_manager(settings: Settings) -> ModelManager:
    models = settings.models
    mirror = open_object_store(settings, models.model_cache_url) if models.model_cache_url else None
    return ModelManager(
        settings.resolved_models_dir,
        civitai_url=models.civitai_url,
        civitai_token=models.civitai_token.get_secret_value() if models.civitai_token else "",
        max_bytes=models.model_max_bytes,
        mirror=mirror,
    )


def parse_lora(entry: str) -> tuple[str, float]:
    """``"<ref>"`` or ``"<ref>=<weight>"`` (as in a style's ``lora_ids``) → (ref, weight)."""
    ref, _, weight = entry.rpartition("=") if "=" in entry else (entry, "", "1")
    return ref, float(weight)
