"""Reference image fetching, verification and normalization against a local HTTP server."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from serve_app.references import (
    ReferenceRejected,
    ReferenceTooLarge,
    ReferenceUnreachable,
    fetch_reference,
    normalize_image,
    public_address,
)
from serve_app.settings import Settings

MAX_BYTES = 50_000


def image_bytes(fmt: str, **save: object) -> bytes:
    """A 40x30 RGB image of noise, in ``fmt``."""
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **save)
    return out.getvalue()


PNG = image_bytes("PNG")
EXIF = Image.Exif()
EXIF[0x010F] = "Secret Camera Co."  # Make
JPEG = image_bytes("JPEG", exif=EXIF, icc_profile=b"\0" * 128, comment=b"hello")
BODIES = {"/cat.png": PNG, "/cat.jpg": JPEG, "/page.html": b"<html><body>hi</body></html>"}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path in BODIES:
            self.reply(200, BODIES[self.path])
        elif self.path == "/declared-big":
            self.send_response(200)
            self.send_header("Content-Length", str(MAX_BYTES + 1))
            self.end_headers()
        elif self.path == "/streamed-big":  # no length: the body runs past the cap
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(MAX_BYTES // 1000 + 2):
                self.wfile.write(b"x" * 1000)
        elif self.path == "/moved":
            self.redirect("/cat.png")
        elif self.path.startswith("/loop"):
            self.redirect(f"/loop{len(self.path)}")
        else:
            self.reply(404, b"not found")

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def settings() -> Settings:
    """The local server is on loopback: allowed here, refused by default (tested below)."""
    return Settings(reference_allow_private_hosts=True, reference_max_bytes=MAX_BYTES)


def decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


# Accepted images are re-encoded as plain RGB PNGs.


def test_png_is_accepted_and_re_encoded(server: str, settings: Settings) -> None:
    ref = fetch_reference(f"{server}/cat.png", settings)
    image = decoded(ref.png)
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (40, 30))
    assert (ref.width, ref.height) == (40, 30)
    assert image.tobytes() == Image.open(io.BytesIO(PNG)).convert("RGB").tobytes()


def test_jpeg_is_re_encoded_without_its_metadata(server: str, settings: Settings) -> None:
    source = Image.open(io.BytesIO(JPEG))
    assert {"exif", "icc_profile"} <= set(source.info)
    image = decoded(fetch_reference(f"{server}/cat.jpg", settings).png)
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (40, 30))
    assert not {"exif", "icc_profile", "comment"} & set(image.info)
    assert not image.getexif()


def test_redirects_are_followed_up_to_a_limit(server: str, settings: Settings) -> None:
    assert fetch_reference(f"{server}/moved", settings).width == 40
    with pytest.raises(ReferenceUnreachable, match="more than 3 redirects"):
        fetch_reference(f"{server}/loop", settings)


def test_transparency_is_flattened_onto_white() -> None:
    clear = io.BytesIO()
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(clear, format="PNG")
    image = decoded(normalize_image(clear.getvalue(), 100).png)
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)


# Refusals: what, and which status the API answers.


def test_html_is_not_an_image(server: str, settings: Settings) -> None:
    with pytest.raises(ReferenceRejected, match="not a PNG, JPEG, WebP or GIF") as caught:
        fetch_reference(f"{server}/page.html", settings)
    assert caught.value.status_code == 422


def test_undecodable_and_oversized_images_are_refused() -> None:
    with pytest.raises(ReferenceRejected, match="cannot be decoded") as caught:
        normalize_image(PNG[: len(PNG) // 2], 10_000)
    assert caught.value.status_code == 422
    with pytest.raises(ReferenceRejected, match="40x30 is over the 1000 pixel limit"):
        normalize_image(PNG, 1000)
    with pytest.raises(ReferenceRejected, match="not a PNG"):  # a format outside the list
        normalize_image(image_bytes("BMP"), 10_000)


@pytest.mark.parametrize("path", ["/declared-big", "/streamed-big"])
def test_bodies_over_the_cap_are_refused(server: str, settings: Settings, path: str) -> None:
    with pytest.raises(ReferenceTooLarge, match=f"over the {MAX_BYTES} byte limit") as caught:
        fetch_reference(f"{server}{path}", settings)
    assert caught.value.status_code == 413


def test_upstream_error_is_a_502(server: str, settings: Settings) -> None:
    with pytest.raises(ReferenceUnreachable, match="the source answered 404") as caught:
        fetch_reference(f"{server}/missing.png", settings)
    assert caught.value.status_code == 502


def test_unreachable_source_is_a_502(settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ReferenceUnreachable, match="source unreachable \\(ConnectError\\)"):
        fetch_reference(f"http://127.0.0.1:{port}/cat.png", settings)
    with pytest.raises(ReferenceUnreachable, match="cannot resolve host"):
        fetch_reference("http://no-such-host.invalid/cat.png", Settings())


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "cat.png"])
def test_unsupported_schemes_are_refused(url: str, settings: Settings) -> None:
    with pytest.raises(ReferenceRejected, match="unsupported scheme") as caught:
        fetch_reference(url, settings)
    assert caught.value.status_code == 422


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://", "name a host"),
        ("gs:///object.png", "name a host"),
        ("gs://\u00a5.\u00f1]a", "not a valid URL"),  # urlsplit: "Invalid IPv6 URL"
        ("http://example.com:99999/a.png", "not a valid URL"),
    ],
)
def test_urls_that_do_not_parse_are_refused(url: str, problem: str, settings: Settings) -> None:
    """Found by the fuzz run: these answered 500 and 502."""
    with pytest.raises(ReferenceRejected, match=problem) as caught:
        fetch_reference(url, settings)
    assert caught.value.status_code == 422


# SSRF guard.


def test_private_hosts_are_refused_by_default(server: str) -> None:
    assert Settings().references.reference_allow_private_hosts is False
    for url in [f"{server}/cat.png", server.replace("127.0.0.1", "localhost") + "/cat.png"]:
        with pytest.raises(ReferenceRejected, match="non-public address") as caught:
            fetch_reference(url, Settings())
        assert caught.value.status_code == 422


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ],
)
def test_non_public_addresses_are_refused(host: str) -> None:
    with pytest.raises(ReferenceRejected, match="non-public address"):
        public_address(host, 80)


def test_public_addresses_pass() -> None:
    assert public_address("8.8.8.8", 443) == "8.8.8.8"
    assert public_address("2001:4860:4860::8888", 443) == "2001:4860:4860::8888"
