"""The model registry: artifacts in S3, records in DynamoDB, signatures in KMS, the audit trail in S3.

- :mod:`~sluice.registry.store`: :class:`~sluice.registry.store.ModelRegistry`, every registry
  operation on one table and one bucket, and ``create_storage``.
- What is stored: :mod:`~sluice.registry.bundle` (artifact names, the bytes to register),
  :mod:`~sluice.registry.records` (a stored version and its status),
  :mod:`~sluice.registry.lineage` (where a version came from).
- How it is stored: :mod:`~sluice.registry.table` (the table's item layout and reads),
  :mod:`~sluice.registry.integrity` (content-addressed, sha256-verified artifacts),
  :mod:`~sluice.registry.signing` (KMS signatures of manifests and approvals),
  :mod:`~sluice.registry.validation` (checks of names and values).
- One job each: :mod:`~sluice.registry.versions` (taking version numbers),
  :mod:`~sluice.registry.approval`, :mod:`~sluice.registry.aliases`,
  :mod:`~sluice.registry.audit` (the event trail, in an Object Lock bucket),
  :mod:`~sluice.registry.loading` (a version in memory), :mod:`~sluice.registry.manifest` (what
  a serving flavour needs), :mod:`~sluice.registry.api_client` (decisions through the registry
  API) and :mod:`~sluice.registry.promotion` (prod pulls from dev).

Nothing is imported here, so the score handler's cold start loads only the modules it uses.
"""
