"""FeatureSchema: inference, round trip, JSON Schema and validation error messages."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.errors import SluiceError
from sluice.models.inputs import Feature
from sluice.models.schema import FeatureSchema
from sluice.models.validation import FeatureError
from sluice.names import JSON_SCHEMA_DRAFT4


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [25, 40, 61, 33],
            "income": [30_000.0, np.nan, 85_000.5, 52_000.0],
            "plan": ["gold", "basic", "gold", None],
            "segment": [1, 2, 3, 2],
        }
    )


@pytest.fixture
def schema(frame) -> FeatureSchema:
    return FeatureSchema.infer(frame, categorical=["segment"])


def messages(errors: list[FeatureError]) -> list[str]:
    return [str(e) for e in errors]


# -- infer -----------------------------------------------------------------------------------


def test_infer_learns_kinds_ranges_categories_and_nullability(schema):
    assert schema.names == ("age", "income", "plan", "segment")
    age, income, plan, segment = schema.features
    assert (age.kind, age.min, age.max, age.nullable) == ("numeric", 25.0, 61.0, False)
    assert (income.min, income.max, income.nullable) == (30_000.0, 85_000.5, True)
    assert (plan.kind, plan.categories, plan.nullable, plan.category_type) == (
        "categorical",
        ("basic", "gold"),
        True,
        "string",
    )
    assert (segment.kind, segment.categories, segment.category_type) == ("categorical", (1, 2, 3), "integer")


def test_round_trip_through_dict(schema):
    again = FeatureSchema.from_dict(schema.to_dict())
    assert again == schema
    assert again.to_dict() == schema.to_dict()


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (
            pd.DataFrame({"a": [1.0]}),
            {"categorical": ["b"]},
            "categorical column(s) not in the training frame: 'b'",
        ),
        (pd.DataFrame({"when": pd.to_datetime(["2026-01-01"])}), {}, "column 'when' has dtype"),
        (
            pd.DataFrame({"id": [f"u{i}" for i in range(20)]}),
            {"max_categories": 10},
            "column 'id' has 20 distinct",
        ),
        (
            pd.DataFrame({"mixed": ["a", 1]}, dtype=object),
            {},
            "feature 'mixed': categories must be all strings",
        ),
        (
            pd.DataFrame({"x": [0.5, 1.5]}),
            {"categorical": ["x"]},
            "column 'x' is marked categorical but holds",
        ),
        (pd.DataFrame({"empty": pd.Series([None, None], dtype=object)}), {}, "column 'empty' has no values"),
        (pd.DataFrame({0: [1.0]}), {}, "feature names must be strings"),
    ],
)
def test_infer_errors_name_the_column(frame, kwargs, message):
    with pytest.raises(SluiceError) as caught:
        FeatureSchema.infer(frame, **kwargs)
    assert message in str(caught.value)


def test_infer_needs_a_dataframe():
    with pytest.raises(SluiceError, match="needs a pandas DataFrame, got list"):
        FeatureSchema.infer([{"a": 1}])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "schema must be a JSON object, got list"),
        ({"format": "other/1", "features": []}, "schema.format: expected"),
        ({"features": []}, "schema.features: expected a non-empty list"),
        ({"features": ["age"]}, "schema.features[0]: expected an object, got str"),
        (
            {"features": [{"name": "a", "kind": "numeric", "colour": 1}]},
            "schema.features[0]: unknown field(s) colour",
        ),
        ({"features": [{"kind": "numeric"}]}, "schema.features[0].name: required"),
        ({"features": [{"name": "a", "kind": "numeric", "nullable": "yes"}]}, "schema.features[0].nullable"),
        ({"features": [{"name": "a", "kind": "numeric", "required": "no"}]}, "schema.features[0].required"),
        (
            {"features": [{"name": "a", "kind": "numeric", "required": False, "nullable": False}]},
            "schema.features[0]: feature 'a': a feature that may be absent must be nullable",
        ),
        ({"features": [{"name": "a", "kind": "text"}]}, "schema.features[0]: feature 'a': kind must be"),
        ({"features": [{"name": "a", "kind": "numeric", "min": 3, "max": 1}]}, "min 3 is greater than max 1"),
        ({"features": [{"name": "a", "kind": "categorical"}]}, "needs a non-empty list of categories"),
        (
            {"features": [{"name": "a", "kind": "numeric"}, {"name": "a", "kind": "numeric"}]},
            "feature 'a' appears twice",
        ),
    ],
)
def test_from_dict_errors_name_the_field(data, message):
    with pytest.raises(SluiceError) as caught:
        FeatureSchema.from_dict(data)
    assert message in str(caught.value)


# -- JSON Schema -----------------------------------------------------------------------------


def test_json_schema_requires_every_inferred_feature_and_enumerates_categories(schema):
    doc = schema.to_json_schema(max_instances=100, allow_extra=False)
    assert doc["$schema"] == JSON_SCHEMA_DRAFT4
    assert doc["required"] == ["instances"]
    instances = doc["properties"]["instances"]
    assert (instances["minItems"], instances["maxItems"]) == (1, 100)
    item = instances["items"]
    # Nullable features are required too: a client sends null for an unknown value, never
    # leaves the key out (before issue 17 only non-nullable ones were, so "income" went missing unseen)
    assert item["required"] == ["age", "income", "plan", "segment"]
    assert item["additionalProperties"] is False
    assert item["properties"]["age"] == {"type": "number"}
    assert item["properties"]["income"] == {"type": ["number", "null"]}
    assert item["properties"]["plan"] == {"type": ["string", "null"], "enum": ["basic", "gold", None]}
    assert item["properties"]["segment"] == {"type": "integer", "enum": [1, 2, 3]}


def test_json_schema_leaves_categories_open_when_unknowns_are_ignored(frame):
    schema = FeatureSchema.infer(frame, unknown={"plan": "ignore"})
    prop = schema.to_json_schema()["properties"]["instances"]["items"]["properties"]["plan"]
    assert "enum" not in prop
    assert "maxItems" not in schema.to_json_schema()["properties"]["instances"]


# -- validate --------------------------------------------------------------------------------

GOOD = {"age": 30, "income": 40_000.0, "plan": "gold", "segment": 2}


def test_valid_records_have_no_errors(schema):
    frame, errors = schema.validate([GOOD, {**GOOD, "income": None, "plan": None}])
    assert errors == []
    assert list(frame.columns) == list(schema.names)
    assert math.isnan(frame["income"][1])


@pytest.mark.parametrize(
    ("record", "code", "message"),
    [
        ({k: v for k, v in GOOD.items() if k != "age"}, "missing", "instances[1].age: required"),
        ({k: v for k, v in GOOD.items() if k != "income"}, "missing", "instances[1].income: required"),
        ({**GOOD, "age": "old"}, "type", "instances[1].age: expected a number, got 'old'"),
        ({**GOOD, "age": True}, "type", "instances[1].age: expected a number, got True"),
        ({**GOOD, "age": None}, "null", "instances[1].age: may not be null"),
        ({**GOOD, "age": float("inf")}, "type", "instances[1].age: expected a finite number"),
        ({**GOOD, "plan": "platinum"}, "unknown_category", "instances[1].plan: unknown category 'platinum'"),
        ({**GOOD, "plan": 3}, "type", "instances[1].plan: expected a string category, got 3"),
        ({**GOOD, "segment": None}, "null", "instances[1].segment: may not be null"),
        ({**GOOD, "segment": "two"}, "type", "instances[1].segment: expected an integer category"),
    ],
)
def test_validation_errors_name_the_instance_and_feature(schema, record, code, message):
    _, errors = schema.validate([GOOD, record])
    assert len(errors) == 1
    assert errors[0].code == code
    assert errors[0].rows == (1,)
    assert message in str(errors[0])


def test_unknown_category_message_lists_allowed_values(schema):
    _, errors = schema.validate([{**GOOD, "plan": "platinum"}])
    assert "(allowed: 'basic', 'gold')" in str(errors[0])


def test_one_error_per_feature_however_many_instances(schema):
    _, errors = schema.validate([{**GOOD, "age": "x"}] * 5)
    assert len(errors) == 1
    assert errors[0].rows == (0, 1, 2, 3, 4)
    assert "(also instances[1], instances[2] and 2 more; 5 instances in all)" in str(errors[0])


def test_out_of_range_is_flagged_or_rejected(schema):
    records = [GOOD, {**GOOD, "age": 99}]
    frame, errors = schema.validate(records)
    assert errors == [] and frame.attrs["out_of_range"] == {"age": [1]}
    _, errors = schema.validate(records, out_of_range="reject")
    assert messages(errors) == ["instances[1].age: 99 is outside the training range [25, 61]"]
    with pytest.raises(SluiceError, match="out_of_range must be 'flag' or 'reject'"):
        schema.validate(records, out_of_range="clip")


def test_records_that_are_not_objects(schema):
    _, errors = schema.validate([GOOD, "age=3", 7])
    assert [e.code for e in errors] == ["record"]
    assert "instances[1]: expected an object of features, got str" in str(errors[0])
    assert errors[0].rows == (1, 2)
    with pytest.raises(SluiceError, match="instances: expected a list of objects, got dict"):
        schema.validate(GOOD)


def test_dataframe_input_with_an_absent_column(schema):
    frame = pd.DataFrame([GOOD, GOOD]).drop(columns=["segment"])
    _, errors = schema.validate(frame)
    assert messages(errors) == ["segment: required (column absent)"]
    assert errors[0].rows == (0, 1)


def test_feature_definition_errors():
    with pytest.raises(SluiceError, match="feature name must be a non-empty string"):
        Feature(name="", kind="numeric")
    with pytest.raises(SluiceError, match="feature 'a': a numeric feature has no categories"):
        Feature(name="a", kind="numeric", categories=("x",))
    with pytest.raises(SluiceError, match="feature 'a': unknown must be 'reject' or 'ignore'"):
        Feature(name="a", kind="categorical", categories=("x",), unknown="drop")
    with pytest.raises(SluiceError, match="no feature 'zzz' in the schema"):
        FeatureSchema((Feature(name="a", kind="numeric"),))["zzz"]


@settings(max_examples=40, deadline=None)
@given(
    ages=st.lists(st.integers(min_value=0, max_value=120), min_size=2, max_size=30),
    plans=st.lists(st.sampled_from(["a", "b", "c"]), min_size=2, max_size=30),
)
def test_training_rows_always_validate_against_their_own_schema(ages, plans):
    # Property: whatever the training data, its own rows pass its inferred schema
    n = min(len(ages), len(plans))
    frame = pd.DataFrame({"age": ages[:n], "plan": plans[:n]})
    schema = FeatureSchema.infer(frame)
    _, errors = schema.validate(frame.to_dict(orient="records"), out_of_range="reject")
    assert errors == []


# -- required and nullable ---------------------------------------------------------------------


def test_infer_requires_every_feature_and_allows_null_where_the_reference_has_nulls(schema):
    # Given the reference frame, where only income and plan have missing values
    # Then every feature is required, and exactly those two are nullable
    assert {f.name: (f.required, f.nullable) for f in schema.features} == {
        "age": (True, False),
        "income": (True, True),
        "plan": (True, True),
        "segment": (True, False),
    }
    assert all(f["required"] is True for f in schema.to_dict()["features"])


def test_optional_features_may_be_absent_and_are_nullable(frame):
    # Given age declared optional although the reference has no missing age
    schema = FeatureSchema.infer(frame, categorical=["segment"], optional=["age"])
    assert (schema["age"].required, schema["age"].nullable) == (False, True)
    item = schema.to_json_schema()["properties"]["instances"]["items"]
    assert item["required"] == ["income", "plan", "segment"]
    assert item["properties"]["age"] == {"type": ["number", "null"]}
    # When an instance leaves it out
    out, errors = schema.validate([{k: v for k, v in GOOD.items() if k != "age"}, GOOD])
    # Then it is scored as a null (the model imputes it)
    assert errors == [] and math.isnan(out["age"][0]) and out["age"][1] == 30
    with pytest.raises(SluiceError, match="optional column\\(s\\) not in the training frame: 'zzz'"):
        FeatureSchema.infer(frame, optional=["zzz"])


def test_a_schema_record_without_required_keeps_its_old_meaning():
    # Given a feature schema stored before features said whether they are required
    old = {
        "format": "sluice.feature-schema/1",
        "features": [
            {"name": "age", "kind": "numeric", "nullable": False},
            {"name": "income", "kind": "numeric", "nullable": True},
            {"name": "plan", "kind": "categorical", "categories": ["a", "b"]},
        ],
    }
    schema = FeatureSchema.from_dict(old)
    # Then a feature is required unless it is nullable, as then
    required = [(f.name, f.required) for f in schema.features]
    assert required == [("age", True), ("income", False), ("plan", True)]
    assert schema.to_json_schema()["properties"]["instances"]["items"]["required"] == ["age", "plan"]
    _, errors = schema.validate([{"age": 3, "plan": "a"}])
    assert errors == []
    # And it reads back the same once written with the field
    assert FeatureSchema.from_dict(schema.to_dict()) == schema


def test_missing_and_null_errors_name_the_instance_and_feature(schema):
    records = [GOOD] * 3 + [{k: v for k, v in GOOD.items() if k != "income"}, {**GOOD, "age": None}]
    _, errors = schema.validate(records)
    assert messages(errors) == ["instances[3].income: required", "instances[4].age: may not be null"]
    assert [(e.feature, e.code, e.rows) for e in errors] == [
        ("income", "missing", (3,)),
        ("age", "null", (4,)),
    ]


def test_feature_required_flag_checks():
    assert Feature(name="a", kind="numeric").required is True
    assert Feature(name="a", kind="numeric", nullable=True).required is False  # the old default
    assert Feature(name="a", kind="numeric", nullable=True, required=True).to_dict()["required"] is True
    with pytest.raises(SluiceError, match="feature 'a': required must be true or false"):
        Feature(name="a", kind="numeric", required="yes")  # type: ignore[arg-type]
