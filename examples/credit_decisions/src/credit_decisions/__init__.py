"""Credit decisions: a model project that Sluice registers, serves, monitors and retrains.

- :mod:`credit_decisions.features`: the custom feature-engineering transformer.
- :mod:`credit_decisions.pipeline`: the scikit-learn pipeline (features, then a
  ``HistGradientBoostingClassifier`` with native categorical support).
- :mod:`credit_decisions.scorecard`: a hand-written points scorecard, served as a python-flavour
  model (``model`` in ``[tool.sluice]``).
- :mod:`credit_decisions.steps`: the steps Sluice runs: ``preprocess``, ``train``, ``postprocess``.
"""

__version__ = "1.0.0"
