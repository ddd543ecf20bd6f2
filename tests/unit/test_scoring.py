"""Scoring runtime: request parsing, schema errors as 400s naming the field, both flavours agree."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.errors import SluiceError
from sluice.models.onnx_export import to_onnx
from sluice.models.schema import FeatureSchema
from sluice.models.training import train
from sluice.names import MAX_INSTANCES
from sluice.serving.predictors import OnnxPredictor, SklearnPredictor
from sluice.serving.request import MAX_BODY_BYTES, RequestError, parse_request
from sluice.serving.scoring import Scorer
from sluice_demo import datasets


@pytest.fixture(scope="module")
def trained():
    spec = datasets.credit_spec(max_iter=500)
    # No missing values, so every feature is required by the inferred schema.
    return train(datasets.credit(3000, seed=3, missing_rate=0.0), spec)


@pytest.fixture(scope="module")
def schema(trained):
    return FeatureSchema.infer(trained.train[trained.spec.features], categorical=trained.spec.categorical)


@pytest.fixture(scope="module")
def scorers(trained, schema):
    onnx = to_onnx(trained.estimator, trained.preprocessor.n_features_out_)
    common = {"name": "credit", "version": 1, "schema": schema, "preprocessor": trained.preprocessor}
    return {
        "sklearn": Scorer(flavour="sklearn", predictor=SklearnPredictor(trained.estimator), **common),
        "onnx": Scorer(flavour="onnx", predictor=OnnxPredictor(onnx), **common),
    }


def instances(trained, n=5):
    rows = trained.holdout[list(trained.spec.features)].head(n)
    out = []
    for record in rows.to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()})
    return out


def good_row(trained):
    # A holdout row without missing values, as a client sends it.
    for row in instances(trained, 50):
        if all(v is not None for v in row.values()):
            return row
    raise AssertionError("no complete row")


@pytest.mark.parametrize("flavour", ["sklearn", "onnx"])
def test_score_matches_the_estimator_on_the_same_rows(trained, scorers, flavour):
    # Given holdout rows sent as JSON
    rows = instances(trained, 20)
    # When scored through the endpoint runtime
    scored = scorers[flavour].score(json.dumps({"instances": rows}), request_id="r-1")
    # Then labels equal scikit-learn's on the DataFrame path, and the response names what served it
    frame = trained.holdout.head(20)
    expected = trained.estimator.predict(trained.preprocessor.transform(frame))
    body = scored.to_dict()
    assert body["predictions"] == expected.tolist()
    assert np.allclose(
        body["probabilities"],
        trained.estimator.predict_proba(trained.preprocessor.transform(frame)),
        atol=1e-4,
    )
    assert (body["model"], body["version"], body["request_id"]) == ("credit", 1, "r-1")
    assert scored.positive_probabilities.shape == (20,)


def test_regressor_has_no_probabilities(trained, schema):
    from sklearn.linear_model import Ridge

    X = trained.preprocessor.transform(trained.train)
    ridge = Ridge().fit(X, trained.train["income"].fillna(0).to_numpy())
    scorer = Scorer(
        name="r",
        version=2,
        flavour="sklearn",
        schema=schema,
        preprocessor=trained.preprocessor,
        predictor=SklearnPredictor(ridge),
    )
    body = scorer.score({"instances": [good_row(trained)]}, request_id="x").to_dict()
    assert body["probabilities"] is None
    assert isinstance(body["predictions"][0], float)


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ("", "body", 400),
        ("{not json", "body", 400),
        ("[1, 2]", "body", 400),
        ('{"instances": [], "x": 1}', "body", 400),
        ("{}", "instances", 400),
        ('{"instances": {"a": 1}}', "instances", 400),
        ('{"instances": []}', "instances", 400),
        ("[" * 100_000 + "]" * 100_000, "body", 400),
        (b"\xff\xfe{", "body", 400),
    ],
)
def test_malformed_requests_name_the_field(body, field, status):
    with pytest.raises(RequestError) as caught:
        parse_request(body)
    assert caught.value.status == status
    assert str(caught.value).startswith(f"{field}:")
    assert caught.value.to_dict()["errors"][0]["field"] == field


def test_oversize_body_and_batch_are_413():
    with pytest.raises(RequestError) as big:
        parse_request(" " * (MAX_BODY_BYTES + 1) + "{}")
    assert big.value.status == 413 and "body" in str(big.value)
    with pytest.raises(RequestError) as many:
        parse_request({"instances": [{}] * (MAX_INSTANCES + 1)})
    assert many.value.status == 413 and "instances" in str(many.value)


@pytest.mark.parametrize(
    ("change", "code", "feature"),
    [
        (lambda r: r.pop("income"), "missing", "income"),
        (lambda r: r.update(age="forty"), "type", "age"),
        (lambda r: r.update(age=True), "type", "age"),
        (lambda r: r.update(age=float("nan")), "null", "age"),
        (lambda r: r.update(tenure=10**400), "type", "tenure"),
        (lambda r: r.update(region="atlantis"), "unknown_category", "region"),
        (lambda r: r.update(product=3), "type", "product"),
    ],
)
@pytest.mark.parametrize("flavour", ["sklearn", "onnx"])
def test_bad_features_are_400_naming_the_feature(trained, schema, scorers, change, code, feature, flavour):
    # Given a valid row made invalid in one feature (schema says the feature is required)
    row = dict(good_row(trained))
    change(row)
    assert not dict(zip(schema.names, schema.features, strict=True))[feature].nullable
    # When scored
    with pytest.raises(RequestError) as caught:
        scorers[flavour].score(json.dumps({"instances": [good_row(trained), row]}), request_id="r")
    # Then one 400 names the feature, the problem and the instance
    err = caught.value
    assert err.status == 400
    assert err.errors[0]["feature"] == feature and err.errors[0]["code"] == code
    assert f"instances[1].{feature}" in str(err)


def test_record_that_is_not_an_object(scorers):
    with pytest.raises(RequestError) as caught:
        scorers["sklearn"].score({"instances": [1]}, request_id="r")
    assert "instances[0]" in str(caught.value)


def test_unknown_category_with_ignore_policy_scores(trained, schema):
    features = [
        f if f.name != "region" else type(f)(**{**f.__dict__, "unknown": "ignore"}) for f in schema.features
    ]
    lenient = FeatureSchema(tuple(features))
    scorer = Scorer(
        name="credit",
        version=1,
        flavour="sklearn",
        schema=lenient,
        preprocessor=trained.preprocessor,
        predictor=SklearnPredictor(trained.estimator),
    )
    row = {**good_row(trained), "region": "atlantis"}
    assert len(scorer.score({"instances": [row]}, request_id="r").predictions) == 1


def test_flavour_must_be_known(trained, schema):
    with pytest.raises(SluiceError, match="flavour"):
        Scorer(
            name="m",
            version=1,
            flavour="pickle",
            schema=schema,
            preprocessor=trained.preprocessor,
            predictor=SklearnPredictor(trained.estimator),
        )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_requests_are_scored_or_refused_with_a_4xx(trained, scorers, data):
    # Given a valid row with random features replaced by random JSON values, or random bodies
    row = dict(good_row(trained))
    for name in data.draw(st.lists(st.sampled_from(sorted(row)), max_size=4)):
        row[name] = data.draw(json_values)
    body = data.draw(
        st.sampled_from(["row", "raw", "text"]).flatmap(
            lambda kind: (
                st.just(json.dumps({"instances": [row]}))
                if kind == "row"
                else st.builds(lambda v: json.dumps(v), json_values)
                if kind == "raw"
                else st.text(max_size=40)
            )
        )
    )
    # When scored by either flavour, then it is a result or a RequestError with a 4xx status
    for scorer in scorers.values():
        try:
            scored = scorer.score(body, request_id="f")
        except RequestError as err:
            assert 400 <= err.status < 500
            assert err.errors and err.errors[0]["field"]
        else:
            assert len(scored.predictions) >= 1


def test_onnx_path_imports_without_pandas_sklearn_or_scipy(trained, tmp_path):
    # Given the zip flavour's environment: numpy + onnxruntime, no pandas/scikit-learn/scipy
    onnx = to_onnx(trained.estimator, trained.preprocessor.n_features_out_)
    (tmp_path / "model.onnx").write_bytes(onnx)
    (tmp_path / "pre.json").write_text(json.dumps(trained.preprocessor.to_artifacts()))
    schema = FeatureSchema.infer(trained.train[trained.spec.features], categorical=trained.spec.categorical)
    (tmp_path / "schema.json").write_text(json.dumps(schema.to_dict()))
    (tmp_path / "body.json").write_text(json.dumps({"instances": [good_row(trained)]}))
    script = textwrap.dedent(
        f"""
        import json, pathlib, sys
        for name in ("pandas", "sklearn", "scipy", "joblib"):
            sys.modules[name] = None  # any import of them raises ImportError
        from sluice.models.features import Preprocessor
        from sluice.models.schema import FeatureSchema
        from sluice.serving.predictors import OnnxPredictor
        from sluice.serving.scoring import Scorer
        import sluice.serving.capture, sluice.serving.capture_reader
        d = pathlib.Path({str(tmp_path)!r})
        scorer = Scorer(
            name="credit", version=1, flavour="onnx",
            schema=FeatureSchema.from_dict(json.loads((d / "schema.json").read_text())),
            preprocessor=Preprocessor.from_artifacts(json.loads((d / "pre.json").read_text())),
            predictor=OnnxPredictor((d / "model.onnx").read_bytes()),
        )
        print(json.dumps(scorer.score((d / "body.json").read_text(), request_id="sub").to_dict()))
        try:
            scorer.score('{{"instances": [{{"income": "x"}}]}}', request_id="bad")
        except Exception as err:
            print(type(err).__name__, err.status)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    # Then the request is scored and a bad one is refused with a 400, all without those modules
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.strip().splitlines()
    assert json.loads(first)["request_id"] == "sub"
    assert second == "RequestError 400"
