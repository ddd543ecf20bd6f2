"""The built-in tabular recipe: its features, training, request schema and ONNX export.

- :mod:`~sluice.models.features`: preprocessing with its learned state as plain JSON.
- :mod:`~sluice.models.training`: the training spec, training and holdout metrics.
- :mod:`~sluice.models.inputs`, :mod:`~sluice.models.schema` and
  :mod:`~sluice.models.validation`: one input feature, the feature schema of a model, and the
  validation of scoring requests against it (:mod:`~sluice.models.cells`: type checks on cells).
- :mod:`~sluice.models.onnx_export`: conversion to ONNX and the parity check.
- :mod:`~sluice.models.packaging`: a training result as a
  :class:`~sluice.registry.bundle.ModelBundle` to register.

Nothing is imported here, so scoring loads the schema and the features without pandas or
scikit-learn.
"""
