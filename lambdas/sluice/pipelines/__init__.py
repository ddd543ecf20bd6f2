"""The pipelines: one shared skeleton, and the batch scoring and retraining steps built on it.

- :mod:`~sluice.pipelines.skeleton`: what every pipeline shares (run ids, run start, following
  an execution, the in-process runner, notifications).
- :mod:`~sluice.pipelines.datasource`: reading and writing tabular data with its lineage.
- Batch scoring, one module per part: :mod:`~sluice.pipelines.batch_request` (the request),
  :mod:`~sluice.pipelines.batch_shards` (shard planning and layout),
  :mod:`~sluice.pipelines.batch_scorers` (model and endpoint scorers), the steps
  :mod:`~sluice.pipelines.batch_preprocess`, :mod:`~sluice.pipelines.batch_score`,
  :mod:`~sluice.pipelines.batch_postprocess` and :mod:`~sluice.pipelines.batch_notify` (one per
  handler), and :mod:`~sluice.pipelines.batch` (the in-process run and the run start).
- Retraining: :mod:`~sluice.pipelines.retraining` (the steps and run start) and
  :mod:`~sluice.pipelines.retraining_report` (the champion/challenger comparison).

Nothing is imported here, so importing one step loads only what that step needs.
"""
