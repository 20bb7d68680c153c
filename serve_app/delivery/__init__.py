"""User-unique delivery: the Ingress's and the JobWorker's engine (see ``deliverer``)."""

from serve_app.delivery.deliverer import (
    Deliverer,
    Delivery,
    DeliveryConfig,
    Handles,
    Shot,
    UnknownCity,
    tenant_user,
)

__all__ = [
    "Deliverer",
    "Delivery",
    "DeliveryConfig",
    "Handles",
    "Shot",
    "UnknownCity",
    "tenant_user",
]
