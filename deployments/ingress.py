"""Ingress: the HTTP API (FastAPI) as a Serve deployment. The routes are
``serve_app/api/routes/``, one module per family, each an ``APIRouter`` whose functions take
this replica's services as a typed dependency (``api/services.py``). The Ingress builds those
services and, on its replica, the app that serves them; it holds no route itself."""
# No `from __future__ import annotations`: Serve and FastAPI read signatures at runtime.

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.api.idempotency import IdempotencyConfig, Replays
from serve_app.api.routes import routed_api
from serve_app.api.services import IngressServices
from serve_app.characters.desk import CharacterDesk
from serve_app.delivery import Deliverer, DeliveryConfig, Handles
from serve_app.delivery.places import load_places
from serve_app.diffusion.sources import model_manager
from serve_app.jobs.desk import JobDesk, JobQueueConfig
from serve_app.jobs.kinds.pack import load_variations
from serve_app.looks import Looks
from serve_app.settings import Settings
from serve_app.storage import change_feed, open_object_store


class IngressConfig(DeliveryConfig, IdempotencyConfig, JobQueueConfig):
    """The Ingress's live config (``AppArgs.ingress``): delivery, Idempotency-Key and job knobs."""


# The routes and their OpenAPI document, for tools and tests. A replica builds its own app
# (`__serve_build_asgi_app__`) once its services exist: nothing with a live lock is pickled.
api = routed_api()


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress()
class Ingress:
    def __init__(
        self,
        handles: Handles,
        landmarks_file: str = "config/landmarks.yaml",
        variations_file: str = "config/variations.yaml",
        worker: DeploymentHandle | None = None,
    ) -> None:
        """``worker``: the JobWorker, bound here only so that it is deployed with the graph (it
        leases its jobs from the Catalog, which wakes it when one is queued)."""
        settings = Settings()
        objects = open_object_store(settings)
        catalog = handles.catalog
        deliverer = Deliverer(handles.by_reference(), objects, load_places(landmarks_file))
        variations = load_variations(variations_file)
        self.services = IngressServices(
            catalog=catalog,
            deliverer=deliverer,
            looks=Looks(catalog, objects, model_manager(settings), settings),
            jobs=JobDesk(
                deliverer,
                catalog,
                objects,
                settings,
                variations,
                change_feed(settings),
            ),
            characters=CharacterDesk(
                catalog, handles.dedupe, objects, lambda: deliverer.config.identity
            ),
            replays=Replays(catalog),
            objects=objects,
            settings=settings,
        )

    def reconfigure(self, config: dict[str, Any]) -> None:
        cfg = IngressConfig.model_validate(config)
        services = self.services
        services.deliverer.config = services.replays.config = services.jobs.config = cfg

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The app this replica serves: the routes' services and the API keys on its state."""
        settings = self.services.settings
        served = routed_api()
        served.state.api_keys = [k.get_secret_value().encode() for k in settings.auth.api_keys]
        served.state.admin_keys = [k.get_secret_value().encode() for k in settings.auth.admin_keys]
        served.state.services = self.services
        return served
