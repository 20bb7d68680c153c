"""User-unique delivery: the Ingress's and the JobWorker's engine (``deliverer`` tells it)."""

from serve_app.delivery.config import DeliveryConfig
from serve_app.delivery.deliverer import Deliverer
from serve_app.delivery.handles import Handles
from serve_app.delivery.results import Delivery, Shot, tenant_user
from serve_app.delivery.selfies import Place, UnknownCity

__all__ = [
    "Deliverer",
    "Delivery",
    "DeliveryConfig",
    "Handles",
    "Place",
    "Shot",
    "UnknownCity",
    "tenant_user",
]
