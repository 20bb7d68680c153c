"""The catalog: one facet per table family, each a small class over the shared ``Facet``
state; the ``Catalog`` deployment (``deployments/catalog.py``) mixes them into one handle.

souls (souls and styles), keys (prompt keys, with each soul's key index), variants, claims
(who was sent what), shots (selfie landmarks), locks (work locks, replica and worker
liveness), replays (Idempotency-Key records), costs, jobs (records, leases, stats), and the
sweeper of what only waits to expire.
"""
