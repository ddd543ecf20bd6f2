"""The ``onnx`` flavour (issue 15): any ONNX graph registers as it is and serves with ONNX Runtime alone.

A scikit-learn model may also bring an ONNX twin, kept only if it passes a parity check.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from moto import mock_aws
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sluice.cli import main
from sluice.errors import SluiceError
from sluice.models.contract import Descriptor
from sluice.models.imports import register_fitted
from sluice.models.onnx_export import frame_columns
from sluice.models.onnx_model import OnnxModel
from sluice.registry.bundle import DESCRIPTOR_ARTIFACT, ONNX_ARTIFACT
from sluice.serving.scoring import Scorer
from sluice_demo.datasets import CATEGORICAL, NUMERIC, TARGET, credit
from tests.unit.test_model_imports import bucket_objects
from tests.unit.test_registry import BUCKET, TABLE, create_registry_resources

FEATURES = [*NUMERIC, *CATEGORICAL]


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setenv("SLUICE_REGISTRY_TABLE", TABLE)
    monkeypatch.setenv("SLUICE_REGISTRY_BUCKET", BUCKET)
    with mock_aws():
        yield create_registry_resources()


@pytest.fixture(scope="module")
def reference():
    return credit(1000, seed=4)


def preprocessing() -> ColumnTransformer:
    numeric = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    return ColumnTransformer(
        [
            ("numeric", numeric, list(NUMERIC)),
            ("categories", OneHotEncoder(handle_unknown="ignore"), list(CATEGORICAL)),
        ]
    )


def per_feature_types():
    return [(c, FloatTensorType([None, 1])) for c in NUMERIC] + [
        (c, StringTensorType([None, 1])) for c in CATEGORICAL
    ]


@pytest.fixture(scope="module")
def classifier():
    train = credit(2000, seed=1)
    model = Pipeline([("prepare", preprocessing()), ("model", LogisticRegression(max_iter=500))])
    return model.fit(train[FEATURES], train[TARGET])


@pytest.fixture(scope="module")
def classifier_onnx(classifier, tmp_path_factory):
    """The classifier as skl2onnx writes it by default: named inputs, a label and a ZipMap output."""
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    path.write_bytes(
        convert_sklearn(classifier, initial_types=per_feature_types(), target_opset=18).SerializeToString()
    )
    return path


def onnxruntime_outputs(path, frame):
    """What ONNX Runtime itself answers for ``frame``, fed as skl2onnx documents."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {c: frame[c].to_numpy(np.float32).reshape(-1, 1) for c in NUMERIC}
    feeds |= {c: frame[c].astype(object).to_numpy().reshape(-1, 1) for c in CATEGORICAL}
    return session.run(None, feeds)


def instances(frame):
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in frame[FEATURES].to_dict("records")
    ]


def test_an_onnx_classifier_registers_and_serves_what_onnxruntime_answers(
    registry, classifier_onnx, reference
):
    # Given an ONNX graph written by skl2onnx from a fitted pipeline
    # When it is registered with reference rows and a target
    record = register_fitted(registry, "onnx-credit", classifier_onnx, reference, target=TARGET)
    # Then the version is an onnx one, described from the graph and the reference
    descriptor = Descriptor.from_json(registry.fetch("onnx-credit", record.version, DESCRIPTOR_ARTIFACT))
    assert (descriptor.flavour, descriptor.model_file, descriptor.task) == (
        "onnx",
        "model.onnx",
        "classification",
    )
    assert descriptor.classes == (0, 1) and record.flavours == ("onnx",)
    assert {"roc_auc", "f1"} <= set(record.metrics) and record.notes["source"]["format"] == "onnx"
    # And it serves, on 1,000 rows, exactly what ONNX Runtime answers for the graph
    scorer = Scorer.from_registry(registry, "onnx-credit", record.version, flavour="onnx")
    rows = credit(1000, seed=7)
    labels, probabilities = scorer.predict(instances(rows))
    expected_labels, expected_maps = onnxruntime_outputs(classifier_onnx, rows)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(probabilities, [[m[0], m[1]] for m in expected_maps], rtol=0, atol=1e-7)
    # and it cannot be loaded for the container flavour, which has no ONNX Runtime
    with pytest.raises(SluiceError, match=r"no sklearn flavour|onnx"):
        Scorer.from_registry(registry, "onnx-credit", record.version, flavour="sklearn")


def test_an_onnx_regressor_serves_its_one_float_output(registry, reference, tmp_path):
    # Given a regressor on the numeric features, converted with one 2-D float input
    train = credit(1500, seed=3)
    numeric = list(NUMERIC)
    model = Pipeline([("impute", SimpleImputer()), ("ridge", Ridge())]).fit(
        train[numeric], train[TARGET].astype(float)
    )
    path = tmp_path / "ridge.onnx"
    graph = convert_sklearn(
        model, initial_types=[("X", FloatTensorType([None, len(numeric)]))], target_opset=18
    )
    path.write_bytes(graph.SerializeToString())
    frame = reference[numeric].assign(target=reference[TARGET].astype(float))
    # When it is registered and served
    record = register_fitted(registry, "onnx-ridge", path, frame, target="target")
    assert (
        Descriptor.from_json(registry.fetch("onnx-ridge", record.version, DESCRIPTOR_ARTIFACT)).task
        == "regression"
    )
    assert "rmse" in record.metrics or "mae" in record.metrics
    scorer = Scorer.from_registry(registry, "onnx-ridge", record.version, flavour="onnx")
    rows = credit(1000, seed=8)[numeric]
    payload = [{k: (None if np.isnan(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]
    values, probabilities = scorer.predict(payload)
    # Then the predictions are ONNX Runtime's own, and there are no probabilities
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"X": rows.to_numpy(np.float32)})[0].ravel()
    assert probabilities is None
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)


def test_garbage_and_unknown_graphs_are_refused_in_one_line_before_any_upload(registry, reference, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07this is not a graph" * 10)
    before = bucket_objects()
    with pytest.raises(SluiceError) as refused:
        register_fitted(registry, "garbage", garbage, reference, target=TARGET)
    message = str(refused.value)
    assert message.startswith(f"--model {garbage}:") and "\n" not in message
    assert "ONNX Runtime" in message and len(message) < 400
    assert bucket_objects() == before
    # the CLI says the same in one line, exit 2
    reference.to_csv(tmp_path / "ref.csv", index=False)
    code = main(
        ["models", "register", "garbage", "--model", str(garbage), "--reference", str(tmp_path / "ref.csv")]
    )
    assert code == 2


def test_a_graph_whose_inputs_do_not_match_the_reference_is_refused(registry, classifier_onnx, reference):
    # Given reference rows without one of the graph's inputs
    before = bucket_objects()
    with pytest.raises(SluiceError) as refused:
        register_fitted(
            registry, "mismatch", classifier_onnx, reference.drop(columns=["income"]), target=TARGET
        )
    message = str(refused.value)
    assert "inputs" in message and "income" in message and "\n" not in message
    # Or a categorical feature where the graph wants floats
    wrong = reference.assign(age=reference["age"].astype(str))
    with pytest.raises(SluiceError, match=r"input 'age' is tensor\(float\); a categorical feature needs"):
        register_fitted(registry, "mismatch", classifier_onnx, wrong, target=TARGET)
    assert bucket_objects() == before


def test_a_probability_tensor_graph_binds_its_classes_and_labels(classifier, reference):
    # Given the graph without a ZipMap (a [n, 2] probability tensor)
    options = {id(classifier.steps[-1][1]): {"zipmap": False}}
    graph = convert_sklearn(classifier, initial_types=per_feature_types(), options=options, target_opset=18)
    from sluice.models.schema import FeatureSchema

    schema = FeatureSchema.infer(reference[FEATURES])
    model = OnnxModel(graph.SerializeToString(), schema, task="classification", classes=[0, 1])
    labels, probabilities = model.predict(frame_columns(reference, schema))
    # Then it predicts what the pipeline does
    np.testing.assert_array_equal(labels, classifier.predict(reference[FEATURES]))
    np.testing.assert_allclose(probabilities, classifier.predict_proba(reference[FEATURES]), atol=1e-5)


def test_the_zip_flavour_scores_an_onnx_version_without_pandas(classifier_onnx, reference, tmp_path):
    # Given an ONNX version's serving artifacts: its descriptor, schema and graph
    from sluice.models.onnx_export import bundle_onnx

    bundle = bundle_onnx(classifier_onnx, reference, target=TARGET)
    for name in ("model.json", "schema.json", "model.onnx"):
        (tmp_path / name).write_bytes(bundle.artifacts[name])
    rows = json.dumps(instances(reference.head(5)))
    # When a process without pandas or scikit-learn (the zip endpoint's) loads and scores it
    code = f"""
import json, sys
from pathlib import Path
sys.modules["pandas"] = sys.modules["sklearn"] = None
from sluice.registry.loading import build_model
from sluice.registry.records import VersionRecord
from sluice.serving.scoring import Scorer
record = VersionRecord.from_manifest("m", 1, {{}})
bodies = {{n: (Path({str(tmp_path)!r}) / n).read_bytes() for n in ("model.json", "schema.json", "model.onnx")}}
scorer = Scorer.from_loaded(build_model(record, bodies, "onnx"), flavour="onnx")
labels, probabilities = scorer.predict(json.loads({rows!r}))
print(json.dumps([labels.tolist(), probabilities.tolist()]))
"""
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    # Then it answers what the graph answers
    labels, probabilities = json.loads(done.stdout)
    expected_labels, expected_maps = onnxruntime_outputs(classifier_onnx, reference.head(5))
    assert labels == expected_labels.tolist()
    np.testing.assert_allclose(probabilities, [[m[0], m[1]] for m in expected_maps], atol=1e-7)


# -- ONNX twins of scikit-learn models ------------------------------------------------------------


def test_a_twin_that_matches_is_kept_and_serves_the_zip_flavour(registry, classifier, reference, tmp_path):
    import joblib

    path = tmp_path / "model.joblib"
    joblib.dump(classifier, path)
    twin = convert_sklearn(classifier, initial_types=per_feature_types(), target_opset=18).SerializeToString()
    # When the pipeline is registered with its ONNX twin
    record = register_fitted(registry, "twin", path, reference, target=TARGET, onnx=twin)
    # Then the twin is kept, parity recorded, and the version serves both flavours alike
    assert record.flavours == ("sklearn", "onnx") and record.notes["onnx"]["exported"] is True
    assert record.notes["onnx"]["parity"]["max_probability_diff"] <= 1e-4
    rows = instances(credit(300, seed=5))
    container = Scorer.from_registry(registry, "twin", record.version, flavour="sklearn").predict(rows)
    zipped = Scorer.from_registry(registry, "twin", record.version, flavour="onnx").predict(rows)
    np.testing.assert_array_equal(container[0], zipped[0])
    np.testing.assert_allclose(container[1], zipped[1], atol=1e-4)


def test_a_twin_of_another_model_is_dropped_with_a_one_line_reason(registry, classifier, reference, tmp_path):
    import joblib

    other = Pipeline([("prepare", preprocessing()), ("model", LogisticRegression(C=1e-4, max_iter=500))])
    other.fit(credit(500, seed=11)[FEATURES], credit(500, seed=11)[TARGET])
    path = tmp_path / "model.joblib"
    joblib.dump(classifier, path)
    twin = convert_sklearn(other, initial_types=per_feature_types(), target_opset=18).SerializeToString()
    record = register_fitted(registry, "twin", path, reference, target=TARGET, onnx=twin)
    assert record.flavours == ("sklearn",) and ONNX_ARTIFACT not in record.artifacts
    assert (
        record.notes["onnx"]["exported"] is False and record.notes["onnx"]["reason"] == "parity check failed"
    )
    # garbage as a twin: the same, with the loader's reason on one bounded line
    record = register_fitted(registry, "twin", path, reference, target=TARGET, onnx=b"not a graph")
    reason = record.notes["onnx"]["reason"]
    assert record.flavours == ("sklearn",) and "\n" not in reason and len(reason) <= 400


def test_the_cli_registers_a_twin_and_refuses_a_missing_file(
    registry, classifier, classifier_onnx, reference, tmp_path, capsys
):
    import joblib

    joblib.dump(classifier, tmp_path / "model.joblib")
    reference.to_csv(tmp_path / "ref.csv", index=False)
    base = [
        "models",
        "register",
        "cli-twin",
        "--model",
        str(tmp_path / "model.joblib"),
        "--reference",
        str(tmp_path / "ref.csv"),
    ]
    assert main([*base, "--onnx", str(tmp_path / "missing.onnx")]) == 2
    assert "--onnx" in capsys.readouterr().err
    assert main([*base, "--target", TARGET, "--onnx", str(classifier_onnx), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["flavours"] == ["sklearn", "onnx"]
