"""The catalog: one facet per table family, each a small class over the shared ``Facet``
state (``facet.py``); the ``Catalog`` deployment (``deployments/catalog.py``) mixes them into
one handle.

Facets: ``souls`` (souls and styles), ``keys`` (prompt keys), ``variants``, ``claims`` (who was
sent what), ``shots`` (selfie landmarks), ``locks`` (work locks, replica and worker liveness),
``replays`` (Idempotency-Key records), ``costs``, ``jobs`` (with ``job_leases`` and
``job_stats``), ``sweeper``, ``identities`` (a soul's identity versions), ``projects`` (a
client's projects, their asset versions and event log) and ``asset_search``. Beside them:
``key_index`` (each soul's index of keys, per replica),
``key_vectors`` (one index and its snapshot format), ``ledger`` (prices and budget).
"""
