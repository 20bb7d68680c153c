"""Soul reference images: fetched from a URL, verified with Pillow, stored as plain RGB PNGs.

Sources are ``http(s)://`` (public hosts only unless settings allow others; redirects limited,
streamed under a byte cap) or ``gs://bucket/path`` (allow-listed buckets, read through the same
gcsfs code as the object store). Every refusal is a ``ReferenceRejected`` whose ``status_code``
is what the API answers.
"""

from __future__ import annotations

import io
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

from serve_app.errors import UnusableSource
from serve_app.settings import ObjectSettings, ReferenceSettings, Settings
from serve_app.storage.gcs import GCSObjectStore
from serve_app.storage.objects import ObjectTooLarge

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
MAX_REDIRECTS = 3


class ReferenceRejected(UnusableSource):
    """A reference image that cannot be used."""


class ReferenceTooLarge(ReferenceRejected):
    status_code = 413


class ReferenceForbidden(ReferenceRejected):
    """A source this service may not read (a bucket not in reference_gcs_buckets)."""

    status_code = 403


class ReferenceUnreachable(ReferenceRejected):
    status_code = 502


@dataclass(frozen=True)
class ReferenceImage:
    png: bytes
    width: int
    height: int


def reference_prefix(soul_id: str) -> str:
    return f"soul/{soul_id}/reference/"


def reference_key(soul_id: str, reference_id: str) -> str:
    return f"{reference_prefix(soul_id)}{reference_id}.png"


def fetch_reference(url: str, settings: Settings) -> ReferenceImage:
    """The image at ``url``, verified and normalized; raises ``ReferenceRejected``."""
    return normalize_image(fetch_bytes(url, settings), settings.references.reference_max_pixels)


def fetch_bytes(url: str, settings: Settings) -> bytes:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parses the port: "host:99999" is refused here, not in the fetch)
    except ValueError as exc:
        raise ReferenceRejected(f"url: not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme in ("http", "https", "gs") and not parts.hostname:
        raise ReferenceRejected(f"url: name a host, as in {scheme}://host/path")
    if scheme in ("http", "https"):
        return _fetch_http(url, settings.references)
    if scheme == "gs":
        return _fetch_gcs(url, settings.references, settings.objects)
    raise ReferenceRejected(f"url: unsupported scheme {scheme!r}; use http, https or gs")


def _fetch_http(url: str, references: ReferenceSettings) -> bytes:
    transport = (
        httpx.HTTPTransport() if references.reference_allow_private_hosts else public_transport()
    )
    client = httpx.Client(
        transport=transport,
        timeout=references.reference_timeout_s,
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        trust_env=False,  # no proxies or .netrc credentials from the environment
        # Raw bytes are what count against the cap: a compressed body could expand unchecked.
        headers={"Accept-Encoding": "identity"},
    )
    try:
        with client, client.stream("GET", url) as response:
            if not response.is_success:
                raise ReferenceUnreachable(f"url: the source answered {response.status_code}")
            return _read_capped(response, references.reference_max_bytes)
    except httpx.InvalidURL as exc:
        raise ReferenceRejected(f"url: {exc}") from exc
    except httpx.TooManyRedirects as exc:
        raise ReferenceUnreachable(f"url: more than {MAX_REDIRECTS} redirects") from exc
    except httpx.HTTPError as exc:  # refused, DNS, timeout, a redirect to another scheme
        raise ReferenceUnreachable(f"url: source unreachable ({type(exc).__name__})") from exc


def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ReferenceTooLarge(f"url: {declared} bytes is over the {max_bytes} byte limit")
    data = bytearray()
    for chunk in response.iter_raw():
        data += chunk
        if len(data) > max_bytes:
            raise ReferenceTooLarge(f"url: the body is over the {max_bytes} byte limit")
    return bytes(data)


class _PublicOnly(httpcore.SyncBackend):
    """Connects only to public addresses, checked as each connection opens: every redirect is
    checked too, and a DNS answer cannot change between the check and the connection."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        address = public_address(host, port)
        return super().connect_tcp(address, port, timeout, local_address, socket_options)


def public_transport() -> httpx.HTTPTransport:
    ssl_context = httpx.create_ssl_context()
    transport = httpx.HTTPTransport(verify=ssl_context)
    # httpx takes no network backend; its pool is this one with ours (TLS still verifies the
    # URL's host name: httpcore sends it as SNI, whatever address it connected to).
    transport._pool = httpcore.ConnectionPool(
        ssl_context=ssl_context, network_backend=_PublicOnly()
    )
    return transport


def public_address(host: str, port: int) -> str:
    """An address of ``host``, refused unless every address it resolves to is public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ReferenceUnreachable(f"url: cannot resolve host {host!r}") from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        if not (mapped or address).is_global:
            raise ReferenceRejected(
                f"url: host {host!r} resolves to a non-public address ({address}); "
                "only public hosts are fetched"
            )
    return str(addresses[0])


def _fetch_gcs(url: str, references: ReferenceSettings, objects: ObjectSettings) -> bytes:
    bucket, _, name = url.removeprefix("gs://").partition("/")
    if bucket not in references.reference_gcs_buckets:
        raise ReferenceForbidden(f"url: bucket {bucket!r} is not allowed for references")
    store = GCSObjectStore(f"gs://{bucket}", objects.gcs_credentials_file, objects.gcs_endpoint)
    try:
        return store.get(name, max_bytes=references.reference_max_bytes)
    except ObjectTooLarge as exc:
        raise ReferenceTooLarge(
            f"url: the object is over the {references.reference_max_bytes} byte limit"
        ) from exc
    except ValueError as exc:  # an object name the store refuses
        raise ReferenceRejected(f"url: {exc}") from exc
    except Exception as exc:  # gcsfs: missing object, no permission, unreachable endpoint
        raise ReferenceUnreachable(
            f"url: cannot read gs://{bucket} ({type(exc).__name__})"
        ) from exc


def normalize_image(data: bytes, max_pixels: int, field: str = "url") -> ReferenceImage:
    """Decode (PNG, JPEG, WebP or GIF: the first frame), bounded in pixels before decoding, and
    re-encode as an RGB PNG of the pixels alone: no EXIF, ICC profile or text travels along.
    ``field``: what the messages call the image."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ReferenceRejected(f"{field}: the image has too many pixels ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ReferenceRejected(f"{field}: not a PNG, JPEG, WebP or GIF image") from exc
    with image:
        if image.width * image.height > max_pixels:
            raise ReferenceRejected(
                f"{field}: {image.width}x{image.height} is over the {max_pixels} pixel limit"
            )
        try:
            rgb = _flatten(ImageOps.exif_transpose(image))
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ReferenceRejected(
                f"{field}: the image cannot be decoded (corrupt or truncated)"
            ) from exc
    out = io.BytesIO()
    rgb.save(out, format="PNG")
    return ReferenceImage(out.getvalue(), rgb.width, rgb.height)


def checked_upload(data: bytes, references: ReferenceSettings, field: str) -> ReferenceImage:
    """An uploaded image, checked as a fetched one is: byte cap, format, pixel cap (before
    decoding), EXIF orientation; normalized to an RGB PNG."""
    if not data:
        raise ReferenceRejected(f"{field}: empty; send an image file")
    if len(data) > references.reference_max_bytes:
        raise ReferenceTooLarge(f"{field}: over the {references.reference_max_bytes} byte limit")
    return normalize_image(data, references.reference_max_pixels, field)


def _flatten(image: Image.Image) -> Image.Image:
    """Transparent parts onto white (the colours under a zero alpha are arbitrary), as RGB."""
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
