"""Domain errors: each knows its HTTP meaning, so pipeline code never speaks HTTP.

The API maps every ``ServiceError`` to a JSON answer with one handler (``serve_app/api/errors.py``):
``status_code``, the message's first line as ``detail`` (or ``public_detail`` where the message
is for operators only), ``errors`` (each problem's type, location and message) when the error
lists several, and ``Retry-After`` when ``retry_after_s`` is set.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error a client may see."""

    status_code = 500
    retry_after_s: float | None = None
    public_detail: str | None = None  # shown instead of the message, which stays in the logs
    errors: list[dict[str, Any]] | None = None  # each problem's type, loc and msg, when several

    def __init__(self, message: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class InvalidRequest(ServiceError):
    """Well-formed input the service refuses; the message names the field and what to fix."""

    status_code = 422


class UnusableSource(InvalidRequest):
    """Something a request names (a model ref, a reference image URL) that cannot be used.

    ``status_code`` says whose fault it is: the client's (4xx) or the source's (502).
    """


class NotFound(ServiceError):
    status_code = 404


class Preempted(ServiceError):
    """A refill's render stopped at a denoising step to give way to a user's render."""

    status_code = 503


class Gone(ServiceError):
    """What the request names existed and was deleted."""

    status_code = 410


class UnknownSoul(NotFound):
    def __init__(self, soul_id: str) -> None:
        super().__init__(f"unknown soul {soul_id!r}")


class Conflict(ServiceError):
    """The request is valid but the state it needs is not there (yet)."""

    status_code = 409


class NoStyle(Conflict):
    def __init__(self, soul_id: str) -> None:
        super().__init__(f"soul {soul_id!r} has no style profile: POST /style first")


class UnusableStyle(Conflict):
    """A soul's stored style names a model the render nodes cannot load."""

    def __init__(self, soul_id: str, problem: str) -> None:
        super().__init__(
            f"soul {soul_id!r}'s style cannot be rendered ({problem}): fix it with POST /style"
        )


class Forbidden(ServiceError):
    status_code = 403


class Busy(ServiceError):
    """Contention that resolves by itself: the client retries after ``retry_after_s``."""

    status_code = 503
    retry_after_s = 1


class ReplicaLost(Busy):
    """A replica serving the request died before it answered (Serve starts another): what it
    was doing may or may not have happened, and nothing was delivered; the client retries."""

    def __init__(self) -> None:
        super().__init__("a replica serving this request died; nothing was delivered, retry")


def replica_died(exc: BaseException) -> bool:
    """The call failed because a replica running it died (or became unreachable), itself or
    one whose response it was handed (Serve raises a ``RayServeException`` caused by the
    ``ActorDiedError`` then): safe to make again elsewhere when the call is idempotent."""
    from ray.exceptions import RayActorError  # imported here: this module stays light

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, RayActorError) or isinstance(root_cause(cause), RayActorError):
            return True
        cause = cause.__cause__
    return False


def root_cause(exc: BaseException) -> BaseException:
    """The error itself, not the wrapper Ray puts around it when it crosses replicas."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def first_line(exc: BaseException) -> str:
    """The error's own message, first line only (or its type when it has none)."""
    cause = root_cause(exc)
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__
