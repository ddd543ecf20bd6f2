"""Monitoring: data drift and concept drift of the served model versions.

Modules, one job each (import the one you need; this package imports none of them, so the zip
labels function loads neither pandas nor scipy).

Drift statistics (no registry or serving imports; the registry fits profiles with them):

- :mod:`~sluice.monitoring.stats`: the tests and distances on binned counts (KS, chi-squared,
  PSI, Jensen-Shannon, Wasserstein, missing rates);
- :mod:`~sluice.monitoring.policy`: ``DriftPolicy``, when a feature drifts and the alarm fires;
- :mod:`~sluice.monitoring.columns`: reading baseline and target columns, quantile edges;
- :mod:`~sluice.monitoring.baselines`: per-feature baselines and target counts, as JSON;
- :mod:`~sluice.monitoring.profile`: ``DriftProfile``, fitted on the training data;
- :mod:`~sluice.monitoring.sketch`: ``TargetSketch``, a window's mergeable counts;
- :mod:`~sluice.monitoring.compare`: the per-feature comparison;
- :mod:`~sluice.monitoring.report`: ``DriftReport``, the result and its metrics;
- :mod:`~sluice.monitoring.formats`: the JSON document names and version.

The monitoring job:

- :mod:`~sluice.monitoring.served`: the window, the registry and the versions served in it;
- :mod:`~sluice.monitoring.window`: a window's capture objects, split into groups, read as frames;
- :mod:`~sluice.monitoring.drift_job`: the data-drift check of the captured window (plan, sketch, finish);
- :mod:`~sluice.monitoring.fanout`: a large window sketched by a Distributed Map's children, then merged;
- :mod:`~sluice.monitoring.estimation`: performance estimated from served probabilities, before labels;
- :mod:`~sluice.monitoring.cloudwatch`: the ``Sluice/Drift`` and ``Sluice/Quality`` metrics;
- :mod:`~sluice.monitoring.report_store`: the stored JSON and HTML drift reports;
- :mod:`~sluice.monitoring.report_html`: the self-contained HTML drift report;
- :mod:`~sluice.monitoring.labels`: ground-truth labels, checked, stored and read back;
- :mod:`~sluice.monitoring.quality`: the concept-drift check, live metrics vs registered ones.
"""
