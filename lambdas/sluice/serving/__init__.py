"""Serving: a model endpoint scores requests, captures them and routes traffic between versions.

Modules, one job each (import the one you need; this package imports none of them, so the
score handler's cold start loads only what it uses):

- :mod:`~sluice.serving.request`: the request contract, parsing and 4xx errors naming the field;
- :mod:`~sluice.serving.predictors`: the scikit-learn and ONNX flavours' predict step;
- :mod:`~sluice.serving.scoring`: a registered model version scoring a request, cached per process;
- :mod:`~sluice.serving.capture`: capture records, their S3 layout, the Firehose/S3 writer;
- :mod:`~sluice.serving.capture_reader`: reading a window of captured rows back;
- :mod:`~sluice.serving.extension`: work after the response, through an internal Lambda extension;
- :mod:`~sluice.serving.traffic`: deploying versions and routing the endpoint's ``live`` alias;
- :mod:`~sluice.serving.canary`: health from endpoint metrics, canary rollouts, A/B tests.
"""
