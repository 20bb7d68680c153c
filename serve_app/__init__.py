"""Soul Serve: the HTTP ingress, app builder, settings, shared schemas and CLI."""
