"""The model contract: the built-in recipe and fitted scikit-learn pipelines behind one interface.

A version with a descriptor (``model.json``) serves its own fitted model from ``model.skops``
(or ``model.joblib``); a version without one is the built-in recipe.
"""

from __future__ import annotations

import io
import json
import zipfile

import boto3
import joblib
import numpy as np
import pytest
from moto import mock_aws
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

from sluice.errors import Conflict, SluiceError
from sluice.models.contract import (
    BUILTIN,
    SKLEARN,
    BuiltinRecipe,
    Descriptor,
    PythonModel,
    SklearnModel,
    describe_sklearn,
    library_mismatch,
    load_estimator,
    schema_frame,
    skops_bytes,
)
from sluice.models.packaging import bundle_from_training
from sluice.models.schema import FeatureSchema
from sluice.models.training import train
from sluice.pipelines.batch_scorers import ModelShardScorer, json_records
from sluice.registry.bundle import DESCRIPTOR_ARTIFACT, SCHEMA_ARTIFACT, ModelBundle
from sluice.registry.lineage import Lineage
from sluice.registry.manifest import serving_artifacts
from sluice.registry.store import create_storage
from sluice.serving.scoring import Scorer
from sluice.serving.traffic import EndpointTraffic
from sluice_demo.datasets import credit, credit_spec

TARGET = "default"
CATEGORICAL = ["region", "product"]
REGION = "eu-west-1"
FUNCTION = "sluice-dev-credit-endpoint"


class Doubler(TransformerMixin, BaseEstimator):
    """A user's own transformer: skops does not trust it by default."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return np.asarray(X, dtype=float) * 2.0


def fitted_pipeline(rows: int = 3000, seed: int = 7, *, custom: bool = False):
    """``(pipeline, features)``: ColumnTransformer + HistGradientBoostingClassifier on credit rows."""
    frame = credit(rows, seed=seed, missing_rate=0.02)
    features = frame.drop(columns=[TARGET])
    numeric = [c for c in features.columns if c not in CATEGORICAL]
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    numbers = Doubler() if custom else FunctionTransformer()
    prep = ColumnTransformer(
        [("cat", encoder, CATEGORICAL), ("num", numbers, numeric)], verbose_feature_names_out=False
    )
    model = HistGradientBoostingClassifier(categorical_features=[0, 1], max_iter=40, random_state=0)
    pipeline = Pipeline([("prep", prep), ("model", model)]).fit(features, frame[TARGET])
    return pipeline, features


def instances_of(rows) -> list[dict]:
    """Rows as a request's JSON instances, exactly (``DataFrame.to_json`` rounds to 10 digits)."""
    return json.loads(json.dumps(json_records(rows)))


def sklearn_bundle(pipeline, features, *, model_file: str = "model.skops", trusted=None, libraries=None):
    """A version of a fitted pipeline: ``model.json``, its model file and ``schema.json``."""
    if model_file == "model.skops":
        body, untrusted = skops_bytes(pipeline)
    else:
        buffer = io.BytesIO()
        joblib.dump(pipeline, buffer)
        body, untrusted = buffer.getvalue(), []
    descriptor = describe_sklearn(
        pipeline,
        model_file=model_file,
        libraries=libraries,
        trusted=untrusted if trusted is None else trusted,
    )
    schema = FeatureSchema.infer(features, categorical=CATEGORICAL)
    return ModelBundle(
        artifacts={
            DESCRIPTOR_ARTIFACT: json.dumps(descriptor).encode(),
            model_file: body,
            SCHEMA_ARTIFACT: json.dumps(schema.to_dict()).encode(),
        },
        estimator="sklearn.pipeline.Pipeline",
    )


@pytest.fixture(scope="module")
def fitted():
    return fitted_pipeline()


@pytest.fixture
def registry():
    with mock_aws():
        yield create_storage("contract-registry", "contract-artifacts")


# -- the descriptor ------------------------------------------------------------------------------


def test_describe_sklearn_records_task_classes_libraries_and_trusted_types(fitted):
    pipeline, _ = fitted
    described = describe_sklearn(pipeline, model_file="model.skops", libraries={"numpy": "2.4.6"})
    import sklearn

    assert described == {
        "flavour": "sklearn",
        "model_file": "model.skops",
        "task": "classification",
        "classes": [0, 1],
        "libraries": {"scikit-learn": sklearn.__version__, "numpy": "2.4.6"},
        "skops_trusted": [],
    }
    assert Descriptor.from_json(json.dumps(described)).to_dict() == described


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model_file": "model.pkl"}, "model_file"),
        ({"task": "ranking"}, "task"),
        ({"flavour": "r"}, "flavour"),
        ({"flavour": "onnx"}, "model_file must be one of model.onnx for flavour onnx"),
    ],
)
def test_a_malformed_descriptor_is_refused_naming_the_field(change, field):
    data = {"model_file": "model.skops", "task": "regression", **change}
    with pytest.raises(SluiceError, match=field):
        Descriptor.from_dict(data)


def test_a_described_bundle_needs_its_descriptor_schema_and_model_file(fitted):
    bundle = sklearn_bundle(*fitted)
    # Then no built-in recipe artifact is needed
    assert set(bundle.artifacts) == {"model.json", "model.skops", "schema.json"}
    # but the model file the descriptor names is
    artifacts = {k: v for k, v in bundle.artifacts.items() if k != "model.skops"}
    with pytest.raises(SluiceError, match=r"model\.skops"):
        ModelBundle(artifacts=artifacts)
    # and a bundle without a descriptor is the built-in recipe, which needs its preprocessing
    with pytest.raises(SluiceError, match=r"preprocessing/imputation\.json"):
        ModelBundle(artifacts={k: v for k, v in bundle.artifacts.items() if k != "model.json"})


def test_library_mismatch_compares_only_libraries_both_name():
    assert library_mismatch({"scikit-learn": "1.5.0"}, {"scikit_learn": "1.9.1"}) == (
        "scikit-learn",
        "1.5.0",
        "1.9.1",
    )
    assert library_mismatch({"scikit-learn": "1.9.1", "lightgbm": "4.0"}, {"Scikit-Learn": "1.9.1"}) is None
    assert library_mismatch({}, {"scikit-learn": "1.9.1"}) is None


# -- serving through the contract ---------------------------------------------------------------


def test_sklearn_model_predicts_what_the_pipeline_predicts(fitted):
    pipeline, features = fitted
    schema = FeatureSchema.infer(features, categorical=CATEGORICAL)
    model = SklearnModel(pipeline, schema)
    scorer = Scorer(name="credit", version=1, flavour="sklearn", model=model)
    rows = features.head(1000)
    instances = instances_of(rows)
    labels, probabilities = scorer.predict(instances)
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(rows), rtol=0, atol=1e-12)
    assert np.array_equal(labels, pipeline.predict(rows))
    assert model.flavour == SKLEARN
    # the frame the model sees is the validated frame: schema order and dtypes
    columns, _ = schema.validate(instances, as_frame=False)
    frame, _ = schema.validate(instances)
    assert schema_frame(columns, schema).dtypes.to_dict() == frame.dtypes.to_dict()


def test_batch_scoring_goes_through_the_contract(fitted):
    pipeline, features = fitted
    schema = FeatureSchema.infer(features, categorical=CATEGORICAL)
    scorer = Scorer(name="credit", version=1, flavour="sklearn", model=SklearnModel(pipeline, schema))
    rows = features.head(500)
    labels, positive = ModelShardScorer(scorer).predict(rows, validated=True)
    np.testing.assert_allclose(positive, pipeline.predict_proba(rows)[:, 1], rtol=0, atol=1e-12)
    assert np.array_equal(labels, pipeline.predict(rows))


@pytest.mark.parametrize("model_file", ["model.skops", "model.joblib"])
def test_a_registered_pipeline_loads_from_its_verified_file_and_scores(registry, fitted, model_file):
    pipeline, features = fitted
    record = registry.register(
        "credit", sklearn_bundle(pipeline, features, model_file=model_file), lineage=Lineage()
    )
    registry.approve("credit", record.version, actor="approver")
    # the container flavour serves it; there is no ONNX flavour
    assert serving_artifacts(record, "sklearn") == ["model.json", "schema.json", model_file]
    with pytest.raises(Conflict, match="onnx"):
        serving_artifacts(record, "onnx")
    scorer = Scorer.from_registry(registry, "credit", record.version)
    assert scorer.model.flavour == SKLEARN and scorer.predictor is None
    rows = features.tail(300)
    _, probabilities = scorer.predict(instances_of(rows))
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(rows), rtol=0, atol=1e-12)


def test_the_builtin_recipe_is_one_implementation_of_the_contract(registry):
    trained = train(credit(400, seed=0), credit_spec(max_iter=200))
    record = registry.register("recipe", bundle_from_training(trained), lineage=Lineage())
    scorer = Scorer.from_registry(registry, "recipe", record.version)
    assert isinstance(scorer.model, BuiltinRecipe) and scorer.model.flavour == BUILTIN
    rows = trained.holdout.drop(columns=[TARGET], errors="ignore").head(50)
    labels, _ = scorer.predict(instances_of(rows))
    assert np.array_equal(labels, trained.predict(rows))


# -- skops trusts only the recorded types --------------------------------------------------------


def test_skops_refuses_a_type_not_in_the_trusted_list():
    pipeline, features = fitted_pipeline(600, custom=True)
    body, untrusted = skops_bytes(pipeline)
    assert any(t.endswith("Doubler") for t in untrusted)
    refused = Descriptor(model_file="model.skops", task="classification", skops_trusted=())
    with pytest.raises(SluiceError, match="skops_trusted"):
        load_estimator(refused, body)
    trusted = Descriptor(model_file="model.skops", task="classification", skops_trusted=tuple(untrusted))
    again = load_estimator(trusted, body)
    np.testing.assert_array_equal(again.predict_proba(features), pipeline.predict_proba(features))


def test_a_registered_skops_file_with_an_untrusted_type_does_not_load(registry):
    # Given a pipeline with the user's own transformer, registered without trusting it
    pipeline, features = fitted_pipeline(600, custom=True)
    record = registry.register("custom", sklearn_bundle(pipeline, features, trusted=[]), lineage=Lineage())
    # Then loading refuses it rather than constructing the type
    with pytest.raises(SluiceError, match="Doubler"):
        registry.load("custom", version=record.version)


# -- library versions at deploy ------------------------------------------------------------------


def _function(libraries: dict[str, str]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(event, context):\n    return {}\n")
    role = boto3.client("iam", region_name=REGION).create_role(
        RoleName="endpoint", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
    )["Role"]["Arn"]
    boto3.client("lambda", region_name=REGION).create_function(
        FunctionName=FUNCTION,
        Runtime="python3.12",
        Role=role,
        Handler="handler.lambda_handler",
        Code={"ZipFile": buffer.getvalue()},
        Environment={
            "Variables": {
                "SLUICE_MODEL_NAME": "credit",
                "SLUICE_MODEL_FLAVOUR": "sklearn",
                "SLUICE_SERVING_LIBRARIES": json.dumps(libraries),
            }
        },
    )


def _described(libraries: dict[str, str]) -> ModelBundle:
    descriptor = {"model_file": "model.skops", "task": "classification", "libraries": libraries}
    return ModelBundle(
        artifacts={"model.json": json.dumps(descriptor).encode(), "model.skops": b"x", "schema.json": b"{}"}
    )


def test_deploy_refuses_a_version_made_with_other_library_versions_in_one_line(registry):
    _function({"scikit-learn": "1.9.1", "numpy": "2.4.6"})
    traffic = EndpointTraffic(function_name=FUNCTION, model_name="credit", registry=registry, actor="ops")
    for libraries in ({"scikit-learn": "1.5.0"}, {"scikit-learn": "1.9.1", "lightgbm": "4.6.0"}):
        version = registry.register("credit", _described(libraries), lineage=Lineage()).version
        registry.approve("credit", version, actor="approver")
    with pytest.raises(Conflict) as refused:
        traffic.deploy(1)
    assert str(refused.value) == (
        "model credit v1 was made with scikit-learn 1.5.0; the endpoint's image has 1.9.1 "
        "(rebuild the image with scikit-learn==1.5.0 or re-register the model)"
    )
    # a version made with the image's versions deploys (libraries the image does not pin are not compared)
    assert traffic.deploy(2).model_version == 2


def test_builtin_versions_record_no_libraries_and_deploy_anywhere(registry):
    _function({"scikit-learn": "0.1"})
    trained = train(credit(300, seed=1), credit_spec(max_iter=100))
    version = registry.register("credit", bundle_from_training(trained), lineage=Lineage()).version
    registry.approve("credit", version, actor="approver")
    traffic = EndpointTraffic(function_name=FUNCTION, model_name="credit", registry=registry, actor="ops")
    assert traffic.deploy(version).model_version == version


def test_the_frame_is_the_same_without_pandas_private_constructor(fitted, monkeypatch):
    import pandas as pd

    _, features = fitted
    schema = FeatureSchema.infer(features, categorical=CATEGORICAL)
    columns, _ = schema.validate(instances_of(features.head(20)), as_frame=False)
    fast = schema_frame(columns, schema)
    monkeypatch.delattr(pd.DataFrame, "_from_arrays")
    pd.testing.assert_frame_equal(schema_frame(columns, schema), fast)


def test_a_malformed_descriptor_is_refused_before_anything_is_uploaded():
    artifacts = {"model.json": b'{"model_file": "model.pkl", "task": "classification"}', "model.pkl": b"x"}
    with pytest.raises(SluiceError, match="model_file"):
        ModelBundle(artifacts={**artifacts, "schema.json": b"{}"})


def test_an_onnx_descriptor_names_its_graph_and_round_trips():
    descriptor = Descriptor(
        model_file="model.onnx", task="classification", flavour="onnx", classes=("no", "yes")
    )
    assert Descriptor.from_json(descriptor.to_json()) == descriptor
    with pytest.raises(SluiceError, match="model_file"):
        Descriptor(model_file="model.onnx", task="regression")  # a scikit-learn descriptor names its own file


# -- the python flavour: the contract around a user's class ------------------------------------------


class _Rules:
    """A user's class as the python flavour calls it: predict and predict_proba of a DataFrame."""

    def __init__(self, width: int = 2, fail: bool = False) -> None:
        self.width, self.fail = width, fail

    def predict(self, frame):
        if self.fail:
            raise ValueError("income is negative\nand a second line")
        return (frame["income"].fillna(0).to_numpy() < 40_000).astype(int)

    def predict_proba(self, frame):
        p = (frame["income"].fillna(0).to_numpy() < 40_000).astype(float)
        return np.column_stack([1 - p, p, np.zeros(len(p))][: self.width])


def test_a_python_model_predicts_through_the_schema_frame_and_fails_in_one_line(fitted):
    _, features = fitted
    schema = FeatureSchema.infer(features, categorical=CATEGORICAL)
    columns, _ = schema.validate(instances_of(features.head(30)), as_frame=False)
    labels, probabilities = PythonModel(_Rules(), schema, task="classification", classes=(0, 1)).predict(
        columns
    )
    assert labels.shape == (30,) and probabilities.shape == (30, 2)
    assert PythonModel(_Rules(), schema, task="regression").predict(columns)[1] is None
    with pytest.raises(
        SluiceError, match=r"^the python model's predict failed \(ValueError: income is negative\)$"
    ):
        PythonModel(_Rules(fail=True), schema, task="classification", classes=(0, 1)).predict(columns)
    with pytest.raises(SluiceError, match=r"predict_proba returned shape \(30, 3\) for 30 rows of 2 classes"):
        PythonModel(_Rules(width=3), schema, task="classification", classes=(0, 1)).predict(columns)
