"""The Deliverer's live knobs (the Ingress's and the JobWorker's ``user_config.delivery``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from serve_app.characters.verdicts import IdentityThresholds


class DeliveryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dedupe_attempts: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Renders tried per new variant before the most distinct one is kept.",
    )
    delivery_attempts: int = Field(
        default=32, ge=1, le=256, description="Render-then-claim rounds before giving up with 503."
    )
    lock_ttl_s: float = Field(
        default=30,
        gt=0,
        description="Lifetime of a key's render lock (work_lock row); renewed every third of it "
        "while the render runs, so a crashed replica's lock frees itself.",
    )
    lock_wait_s: float = Field(
        default=600,
        gt=0,
        description="Longest wait for another replica's render of the same key before a 503.",
    )
    lock_poll_s: float = Field(
        default=0.1, gt=0, le=10, description="How often a waiting request checks the lock."
    )
    replica_ttl_s: float = Field(
        default=5,
        gt=0,
        description="How long this replica's locks outlive it: it says it lives every third of "
        "this, and a lock whose replica went quiet is taken over (instead of after lock_ttl_s).",
    )
    identity: IdentityThresholds = Field(
        default_factory=IdentityThresholds,
        description="The consistency gate: when a render shows a soul's locked identity.",
    )
    regenerate_limit: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Variants derived from one original (regenerated or animated), at most.",
    )
