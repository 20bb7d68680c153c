"""Job webhooks: the job document POSTed to the client's URL when the job ends, signed.

``Soul-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with the deployment's
webhook key: a receiver recomputes it over the raw body and rejects old timestamps (replays).
Only public hosts are called (checked at submit and again as each connection opens, with the
reference fetcher's guard) unless ``webhook_allow_private_hosts`` is on, for development.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from urllib.parse import urlsplit

import httpx

from serve_app.errors import InvalidRequest
from serve_app.references import (
    ReferenceRejected,
    ReferenceUnreachable,
    public_address,
    public_transport,
)
from serve_app.settings import JobSettings

log = logging.getLogger("ray.serve")
SIGNATURE_HEADER = "Soul-Signature"


def signature(key: bytes, body: bytes, t: int) -> str:
    mac = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(key: bytes, body: bytes, header: str, max_age_s: float = 300) -> bool:
    """What a receiver does (the tests use it): the signature matches and is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if not fields.get("t", "").isdigit() or abs(time.time() - int(fields["t"])) > max_age_s:
        return False
    return hmac.compare_digest(signature(key, body, int(fields["t"])), header)


def check_webhook_url(url: str, jobs: JobSettings) -> None:
    """Refuse (422) a webhook URL that is not http(s), or whose host is not public."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("webhook_url: use an http:// or https:// URL with a host")
    if jobs.webhook_allow_private_hosts:
        return
    try:
        public_address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except (ReferenceRejected, ReferenceUnreachable) as exc:
        raise InvalidRequest(str(exc).replace("url:", "webhook_url:", 1)) from exc


class Webhooks:
    def __init__(
        self, jobs: JobSettings, key: bytes, attempts: int = 5, timeout_s: float = 10
    ) -> None:
        """``key``: the HMAC key that signs each body (``Settings.webhook_key``)."""
        self.jobs, self.key = jobs, key
        self.attempts, self.timeout_s = attempts, timeout_s

    async def send(self, url: str, body: bytes) -> bool:
        """POST ``body`` until a 2xx, with exponential backoff and jitter; False: gave up."""
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))
            try:
                status = await asyncio.to_thread(self._post, url, body)
            except (httpx.HTTPError, ReferenceRejected, ReferenceUnreachable) as exc:
                log.warning("webhook to %s failed: %s", urlsplit(url).hostname, exc)
                continue
            if 200 <= status < 300:
                return True
            log.warning("webhook to %s answered %s", urlsplit(url).hostname, status)
        return False

    def _post(self, url: str, body: bytes) -> int:
        transport = (
            httpx.HTTPTransport() if self.jobs.webhook_allow_private_hosts else public_transport()
        )
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self.key, body, int(time.time())),
        }
        with httpx.Client(
            transport=transport, timeout=self.timeout_s, follow_redirects=False, trust_env=False
        ) as client:
            return client.post(url, content=body, headers=headers).status_code
