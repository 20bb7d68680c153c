"""Projects: a tenancy boundary inside an API client, with its own style, and its assets
(characters, environments, nature, props), versioned and locked before a scene may use them.

``models`` holds what clients send and what the catalog keeps; the catalog facet is
``serve_app.catalog.projects``, the routes ``serve_app.api.routes.projects``, the rendering job
``serve_app.jobs.kinds.asset_generate``.
"""
