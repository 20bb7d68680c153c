"""The HTTP side of the Ingress: the FastAPI app, error mapping, dependencies, bodies, replays."""
