"""Registering a model fitted elsewhere (issue 15): skops, joblib and MLflow directories, under moto."""

from __future__ import annotations

import json
import pickle

import cloudpickle
import joblib
import numpy as np
import pytest
import sklearn
import skops.io as sio
import yaml
from moto import mock_aws
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

from sluice import aws as sluice_aws
from sluice.cli import main
from sluice.errors import SluiceError
from sluice.models.imports import UNRECOGNISED, bundle_fitted, read_model, register_fitted
from sluice.registry.lineage import Lineage
from sluice_demo.datasets import credit
from tests.unit.test_registry import BUCKET, TABLE, create_registry_resources

TARGET = "default"
CATEGORICAL = ["region", "product"]


class Doubler(BaseEstimator, TransformerMixin):
    """A user's own transformer: a type outside scikit-learn, numpy and scipy."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X * 2.0


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setenv("SLUICE_REGISTRY_TABLE", TABLE)
    monkeypatch.setenv("SLUICE_REGISTRY_BUCKET", BUCKET)
    with mock_aws():
        yield create_registry_resources()


@pytest.fixture(scope="module")
def reference():
    return credit(400, seed=2)


@pytest.fixture(scope="module")
def pipeline():
    train = credit(1500, seed=1)
    encode = ColumnTransformer(
        [("categories", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), CATEGORICAL)],
        remainder="passthrough",
        verbose_feature_names_out=False,
    )
    booster = HistGradientBoostingClassifier(max_iter=30, categorical_features=CATEGORICAL, random_state=0)
    model = Pipeline([("encode", encode.set_output(transform="pandas")), ("booster", booster)])
    return model.fit(train.drop(columns=[TARGET]), train[TARGET])


def bucket_objects() -> int:
    s3 = sluice_aws.client("s3")
    return sum(
        len(page.get("Versions", []))
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET)
    )


def fetch_json(registry, record, artifact):
    return json.loads(registry.fetch(record.name, record.version, artifact))


def write_mlflow(directory, model, reference, *, flavour="sklearn"):
    """An MLflow model directory as ``mlflow.sklearn.save_model`` writes it, without mlflow."""
    directory.mkdir()
    (directory / "model.pkl").write_bytes(
        cloudpickle.dumps(model) if flavour == "sklearn" else pickle.dumps(model)
    )
    kinds = {"f": "double", "i": "long", "b": "boolean"}
    features = reference.drop(columns=[TARGET])
    inputs = [
        {"type": kinds.get(features[c].dtype.kind, "string"), "name": c, "required": True}
        for c in features.columns
    ]
    flavours = {
        "python_function": {
            "loader_module": "mlflow.sklearn",
            "model_path": "model.pkl",
            "predict_fn": "predict",
            "python_version": "3.11.9",
        }
    }
    if flavour == "sklearn":
        flavours["sklearn"] = {
            "pickled_model": "model.pkl",
            "serialization_format": "cloudpickle",
            "sklearn_version": sklearn.__version__,
            "code": None,
        }
    mlmodel = {
        "artifact_path": "model",
        "flavors": flavours,
        "mlflow_version": "2.17.0",
        "signature": {
            "inputs": json.dumps(inputs),
            "outputs": json.dumps([{"type": "long"}]),
            "params": None,
        },
    }
    (directory / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return directory


# -- scikit-learn files ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".joblib", ".skops"])
def test_a_fitted_pipeline_registers_from_its_file(registry, pipeline, reference, tmp_path, suffix):
    # Given a fitted ColumnTransformer + HistGradientBoosting pipeline saved with joblib or skops
    path = tmp_path / f"credit{suffix}"
    joblib.dump(pipeline, path) if suffix == ".joblib" else sio.dump(pipeline, path)
    # When it is registered with reference data and a target
    # (the pandas output of the ColumnTransformer holds a functools.partial, which must be trusted)
    trusted = ["functools.partial"] if suffix == ".skops" else []
    record = register_fitted(registry, "credit-hgb", path, reference, target=TARGET, trusted=trusted)
    # Then it is stored with skops, described, and the schema comes from the reference features;
    # a binary classifier with labelled rows also gets its calibration check (calibration.json)
    assert set(record.artifacts) == {"model.json", "schema.json", "profile.json", "model.skops", "calibration.json"}
    assert record.notes["holdout_rows"] == len(reference) and "ece_before" in record.notes["calibration"]
    descriptor = fetch_json(registry, record, "model.json")
    assert descriptor["flavour"] == "sklearn" and descriptor["model_file"] == "model.skops"
    assert (descriptor["task"], descriptor["classes"]) == ("classification", [0, 1])
    assert descriptor["libraries"]["scikit-learn"] == sklearn.__version__
    assert set(descriptor["libraries"]) >= {"numpy", "scipy", "skops"}
    assert "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor" in descriptor["skops_trusted"]
    assert all(t.startswith(("sklearn.", "functools.partial")) for t in descriptor["skops_trusted"])
    assert record.estimator == "sklearn.ensemble.HistGradientBoostingClassifier"
    assert record.hyperparameters["max_iter"] == 30
    schema = {f["name"]: f for f in fetch_json(registry, record, "schema.json")["features"]}
    features = reference.drop(columns=[TARGET])
    assert list(schema) == list(features.columns)
    assert schema["region"]["kind"] == "categorical"
    assert sorted(schema["region"]["categories"]) == sorted(features["region"].unique())
    assert schema["income"]["kind"] == "numeric"
    assert fetch_json(registry, record, "profile.json")["n_rows"] == len(reference)
    # And the metrics are the holdout metrics of the reference rows
    scores = pipeline.predict_proba(features)[:, 1]
    labels = pipeline.predict(features)
    assert record.metrics == pytest.approx(
        {
            "accuracy": accuracy_score(reference[TARGET], labels),
            "f1": f1_score(reference[TARGET], labels),
            "roc_auc": roc_auc_score(reference[TARGET], scores),
        }
    )
    assert record.lineage["data_rows"] == len(reference) and len(record.lineage["data_sha256"]) == 64
    # And the lineage records the libraries that made the model, as its descriptor does
    from sklearn import __version__ as sklearn_version

    assert record.lineage["libraries"] == descriptor["libraries"]
    assert record.lineage["libraries"]["scikit-learn"] == sklearn_version
    # And the stored model, loaded back with skops, predicts as the original does
    stored = sio.loads(
        registry.fetch(record.name, record.version, "model.skops"), trusted=descriptor["skops_trusted"]
    )
    np.testing.assert_array_equal(stored.predict_proba(features), pipeline.predict_proba(features))


def test_a_pickle_skops_cannot_hold_keeps_its_joblib_bytes(registry, reference, tmp_path):
    # Given a pipeline with a lambda (skops cannot load it back), pickled with cloudpickle
    small = reference[["income", "age", TARGET]].fillna(0.0)
    features = small.drop(columns=[TARGET])
    model = Pipeline([("scale", FunctionTransformer(lambda x: x / 1000.0)), ("lr", LogisticRegression())])
    model.fit(features, small[TARGET])
    path = tmp_path / "model.pkl"
    path.write_bytes(cloudpickle.dumps(model))
    # When it is registered without a target
    record = register_fitted(registry, "lambda-model", path, features)
    # Then the user's bytes are kept as model.joblib, with the reason, and no metrics
    descriptor = fetch_json(registry, record, "model.json")
    assert (descriptor["model_file"], descriptor["skops_trusted"]) == ("model.joblib", [])
    assert "model.skops" not in record.artifacts and record.metrics == {}
    assert registry.fetch(record.name, record.version, "model.joblib") == path.read_bytes()
    assert record.notes["source"]["kept_joblib"]


def test_a_pickle_from_another_scikit_learn_records_that_version(registry, reference, tmp_path, monkeypatch):
    small = reference[["income", "age", TARGET]].fillna(0.0)
    model = LogisticRegression().fit(small.drop(columns=[TARGET]), small[TARGET])
    path = tmp_path / "model.joblib"
    with monkeypatch.context() as patched:  # as if pickled where scikit-learn 1.0.2 was installed
        patched.setattr(sklearn.base, "__version__", "1.0.2")
        joblib.dump(model, path)
    record = register_fitted(registry, "old-sklearn", path, small, target=TARGET)
    assert record.notes["source"]["pickled_with_scikit_learn"] == ["1.0.2"]
    assert fetch_json(registry, record, "model.json")["libraries"]["scikit-learn"] == sklearn.__version__


def test_a_skops_file_with_an_untrusted_type_is_refused_unless_trusted(registry, reference, tmp_path):
    # Given a skops file holding the user's own transformer
    small = reference[["income", "age", TARGET]].fillna(0.0)
    features = small.drop(columns=[TARGET])
    model = Pipeline([("double", Doubler()), ("lr", LogisticRegression())]).fit(features, small[TARGET])
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    own = f"{Doubler.__module__}.Doubler"
    # When it is registered without trusting that type, then it is refused in one line naming it
    with pytest.raises(SluiceError, match="outside scikit-learn, numpy and scipy") as err:
        read_model(path)
    assert own in str(err.value) and "\n" not in str(err.value)
    # When the type is trusted (by name, or its package), it registers and the trust is recorded
    for trusted in ([own], [f"{Doubler.__module__.split('.')[0]}.*"]):
        record = register_fitted(registry, "own-code", path, small, target=TARGET, trusted=trusted)
        assert own in fetch_json(registry, record, "model.json")["skops_trusted"]
    # And through the CLI, --trust TYPE does the same
    data = tmp_path / "reference.csv"
    small.to_csv(data, index=False)
    argv = [
        "models",
        "register",
        "own-code",
        "--model",
        str(path),
        "--reference",
        str(data),
        "--target",
        TARGET,
    ]
    assert main(argv) == 2
    assert main([*argv, "--trust", own, "--json"]) == 0


def test_a_classifier_with_string_labels_scores_its_second_class_as_positive(registry, reference, tmp_path):
    # Given a binary classifier of "no"/"yes" labels
    small = reference[["income", "age", TARGET]].fillna(0.0)
    small[TARGET] = np.where(small[TARGET] == 1, "yes", "no")
    features = small.drop(columns=[TARGET])
    model = LogisticRegression().fit(features, small[TARGET])
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    # When it is registered with that target, then the metrics treat "yes" (classes_[1]) as positive
    record = register_fitted(registry, "labels", path, small, target=TARGET)
    truth = small[TARGET] == "yes"
    assert record.metrics["f1"] == pytest.approx(f1_score(truth, model.predict(features) == "yes"))
    assert record.metrics["roc_auc"] == pytest.approx(
        roc_auc_score(truth, model.predict_proba(features)[:, 1])
    )
    assert fetch_json(registry, record, "model.json")["classes"] == ["no", "yes"]
    # And labels the model never saw are refused in one line
    with pytest.raises(SluiceError, match=r"label.*the model does not know: maybe"):
        register_fitted(registry, "labels", path, small.assign(**{TARGET: "maybe"}), target=TARGET)


# -- MLflow directories ----------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["sklearn", "python_function"])
def test_an_mlflow_model_directory_registers(registry, pipeline, reference, tmp_path, flavour):
    # Given an MLflow-layout directory: MLmodel, a (cloud)pickled model and a column signature
    directory = write_mlflow(tmp_path / "mlflow-model", pipeline, reference, flavour=flavour)
    # When it is registered (no mlflow installed or imported)
    record = register_fitted(registry, "from-mlflow", directory, reference, target=TARGET)
    # Then it is stored with skops and remembers where it came from
    assert "model.skops" in record.artifacts and record.metrics["roc_auc"] > 0.7
    source = record.notes["source"]
    assert (source["format"], source["flavour"], source["mlflow_version"]) == ("mlflow", flavour, "2.17.0")
    # And served, it answers what the pipeline itself answers
    from sluice.serving.scoring import Scorer

    rows = credit(200, seed=5)
    features = rows[reference.columns.drop(TARGET)]
    scorer = Scorer.from_registry(registry, "from-mlflow", record.version, flavour="sklearn")
    labels, probabilities = scorer.predict(
        [{k: (None if v != v else v) for k, v in row.items()} for row in features.to_dict("records")]
    )
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(features), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(labels, pipeline.predict(features))


def test_an_mlflow_signature_checks_the_reference_columns(pipeline, reference, tmp_path):
    directory = write_mlflow(tmp_path / "m", pipeline, reference)
    imported = read_model(directory)
    with pytest.raises(SluiceError, match=r"lacks column.*income"):
        bundle_fitted(imported, reference.drop(columns=["income"]), target=TARGET)
    wrong = reference.assign(age=reference["age"].astype(str))
    with pytest.raises(SluiceError, match="'age' is str; the MLflow signature says double"):
        bundle_fitted(imported, wrong, target=TARGET)


def test_an_mlflow_directory_without_a_sklearn_flavour_is_refused(tmp_path):
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "MLmodel").write_text(yaml.safe_dump({"flavors": {"onnx": {"data": "model.onnx"}}}))
    with pytest.raises(SluiceError, match=r"no scikit-learn model \(flavours: onnx"):
        read_model(directory)


# -- refusals --------------------------------------------------------------------------------------


def test_an_unrecognised_model_file_is_one_line_and_exit_2(registry, reference, tmp_path, capsys):
    # Given a file that is neither skops, joblib, pickle nor an MLflow directory
    path = tmp_path / "model.txt"
    path.write_text("not a model")
    data = tmp_path / "reference.csv"
    reference.to_csv(data, index=False)
    # When it is registered through the CLI
    code = main(["models", "register", "m", "--model", str(path), "--reference", str(data)])
    # Then the CLI exits 2 with one line naming the expected formats
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"sluice: error: {UNRECOGNISED.format(path=path)}\n"
    assert bucket_objects() == 0
    # and so is a directory without an MLmodel file
    with pytest.raises(SluiceError, match="format not recognised"):
        read_model(tmp_path)


def test_the_cli_registers_a_fitted_model_with_reference_lineage(
    registry, pipeline, reference, tmp_path, capsys
):
    path = tmp_path / "model.joblib"
    joblib.dump(pipeline, path)
    data = tmp_path / "reference.parquet"
    reference.to_parquet(data, index=False)
    argv = [
        "models",
        "register",
        "cli-hgb",
        "--model",
        str(path),
        "--reference",
        str(data),
        "--target",
        TARGET,
    ]
    assert main([*argv, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["lineage"]["data_uri"] == data.resolve().as_uri()
    assert record["lineage"]["data_rows"] == len(reference)
    assert set(record["metrics"]) == {"accuracy", "f1", "roc_auc"}
    # --reference without --model is a one-line error
    assert main(["models", "register", "x", "--data", str(data), "--reference", str(data)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # and so is a training option given with --model
    assert main([*argv, "--numeric", "income"]) == 2
    assert "--numeric: training options, not for --model" in capsys.readouterr().err


def test_an_oversize_version_record_is_refused_before_any_upload(registry, pipeline, reference, tmp_path):
    # Given a valid fitted-model bundle whose notes would make the version item exceed 400 KB
    path = tmp_path / "model.joblib"
    joblib.dump(pipeline, path)
    bundle = bundle_fitted(read_model(path), reference, target=TARGET)
    bundle.notes["onnx"] = {"exported": False, "reason": "x" * 1_600_000}
    before = bucket_objects()
    # When it is registered, then it is refused with one line and the bucket holds nothing new
    with pytest.raises(SluiceError, match=r"over DynamoDB's 400 KB item limit .*notes.*nothing was uploaded"):
        registry.register("huge", bundle, lineage=Lineage())
    assert bucket_objects() == before
    assert registry.list_models() == []


def test_a_model_that_cannot_predict_the_reference_is_refused_before_any_upload(
    registry, pipeline, reference, tmp_path
):
    path = tmp_path / "model.joblib"
    joblib.dump(pipeline, path)
    with pytest.raises(SluiceError, match="cannot predict the --reference rows"):
        register_fitted(registry, "wrong-data", path, reference.drop(columns=["income"]))
    assert bucket_objects() == 0


def test_a_bad_model_name_is_refused_before_the_model_is_read(registry, reference, tmp_path):
    with pytest.raises(SluiceError, match="model name"):
        register_fitted(registry, "no spaces", tmp_path / "absent.joblib", reference)


# -- ONNX twins ------------------------------------------------------------------------------------


def test_a_hist_gradient_boosting_pipeline_registers_without_a_twin_skl2onnx_cannot_make(
    registry, pipeline, reference, tmp_path
):
    # Given the HistGradientBoosting pipeline (categorical features), which skl2onnx cannot convert
    path = tmp_path / "credit.joblib"
    joblib.dump(pipeline, path)
    before = bucket_objects()
    # When it is registered asking for an ONNX twin
    record = register_fitted(registry, "credit-hgb", path, reference, target=TARGET, onnx=True)
    # Then it registers anyway, without model.onnx, and says why in one bounded line
    assert "model.onnx" not in record.artifacts and record.flavours == ("sklearn",)
    outcome = record.notes["onnx"]
    assert outcome["exported"] is False and "cannot be converted to ONNX" in outcome["reason"]
    assert "\n" not in outcome["reason"] and len(outcome["reason"]) < 400
    assert bucket_objects() > before and record.metrics["roc_auc"] > 0.5


def test_a_hist_gradient_boosting_pipeline_refuses_a_twin_of_another_model(
    registry, pipeline, reference, tmp_path
):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    # Given a convertible pipeline's graph, offered as the HistGradientBoosting pipeline's twin
    features = reference.drop(columns=[TARGET]).fillna(0.0)
    numeric = [c for c in features.columns if c not in CATEGORICAL]
    encode = ColumnTransformer(
        [("c", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)], remainder=StandardScaler()
    )
    simple = Pipeline([("encode", encode), ("model", LogisticRegression(max_iter=1000))])
    simple.fit(features, reference[TARGET])
    types = [(c, FloatTensorType([None, 1])) for c in numeric] + [
        (c, StringTensorType([None, 1])) for c in CATEGORICAL
    ]
    twin = convert_sklearn(simple, initial_types=types, target_opset=18).SerializeToString()
    path = tmp_path / "credit.joblib"
    joblib.dump(pipeline, path)
    # When the HistGradientBoosting pipeline is registered with it
    record = register_fitted(registry, "credit-hgb", path, reference, target=TARGET, onnx=twin)
    # Then the twin fails its parity check and is not stored
    assert record.flavours == ("sklearn",) and record.notes["onnx"]["reason"] == "parity check failed"
    assert record.notes["onnx"]["parity"]["ok"] is False


def test_a_convertible_pipeline_gets_its_twin_converted(registry, reference, tmp_path):
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    # Given a pipeline skl2onnx can convert (imputation, scaling, one-hot, logistic regression)
    features = reference.drop(columns=[TARGET])
    numeric = [c for c in features.columns if c not in CATEGORICAL]
    prepare = ColumnTransformer(
        [
            ("n", Pipeline([("i", SimpleImputer()), ("s", StandardScaler())]), numeric),
            ("c", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
        ]
    )
    model = Pipeline([("prepare", prepare), ("model", LogisticRegression(max_iter=1000))])
    model.fit(features, reference[TARGET])
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    # When it is registered asking for a twin
    record = register_fitted(registry, "credit-lr", path, reference, target=TARGET, onnx=True)
    # Then the converted graph passed its parity check and is stored beside the skops file
    assert record.flavours == ("sklearn", "onnx") and record.notes["onnx"]["parity"]["ok"] is True
    assert record.notes["onnx"]["parity"]["rows"] == len(reference)
