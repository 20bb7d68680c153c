"""The HTTP side of the Ingress: the FastAPI app, its routes by family (``routes/``), error
mapping, dependencies, bodies (``protocol``), replays."""
