"""Preprocessing: learned state as JSON, identical results on the DataFrame and the record paths."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.errors import SluiceError
from sluice.models.features import Preprocessor

FRAME = pd.DataFrame(
    {
        "a": [1.0, 2.0, np.nan, 4.0],
        "b": [10.0, 10.0, 10.0, 10.0],
        "colour": ["red", "blue", None, "red"],
    }
)


def test_fit_learns_medians_means_scales_and_categories():
    p = Preprocessor(["a", "b"], ["colour"]).fit(FRAME)
    assert p.medians_.tolist() == [2.0, 10.0]
    # constant column: scale falls back to 1 so it never divides by zero
    assert p.scales_[1] == 1.0
    assert p.categories_ == {"colour": ["blue", "red"]}
    assert p.feature_names_out == ["a", "b", "colour=blue", "colour=red"]


def test_missing_values_are_imputed_and_unknown_categories_encode_as_zeros():
    p = Preprocessor(["a", "b"], ["colour"]).fit(FRAME)
    out = p.transform_records([{"a": None, "b": 10.0, "colour": "green"}])
    assert out.shape == (1, 4)
    assert out[0, 0] == pytest.approx((2.0 - p.means_[0]) / p.scales_[0])
    assert out[0, 2:].tolist() == [0.0, 0.0]


def test_artifacts_round_trip_through_json():
    p = Preprocessor(["a", "b"], ["colour"]).fit(FRAME)
    restored = Preprocessor.from_artifacts(json.loads(json.dumps(p.to_artifacts())))
    assert np.array_equal(restored.transform(FRAME), p.transform(FRAME))
    assert set(p.to_artifacts()) == {"imputation", "normalisation", "encoders"}


def test_incomplete_artifacts_raise_a_clear_error():
    with pytest.raises(SluiceError, match="preprocessing artifacts are incomplete"):
        Preprocessor.from_artifacts({"imputation": {"numeric": {}}})


def test_fit_names_missing_columns():
    with pytest.raises(SluiceError, match="lacks feature column"):
        Preprocessor(["a", "zzz"]).fit(FRAME)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.floats(-1e6, 1e6)),
            st.sampled_from(["red", "blue", "green", None]),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_record_path_equals_dataframe_path(rows):
    # Given any batch of rows, the hot (records) and the batch (DataFrame) paths agree exactly
    p = Preprocessor(["a", "b"], ["colour"]).fit(FRAME)
    records = [{"a": a, "b": 1.0, "colour": c} for a, c in rows]
    frame = pd.DataFrame(records).astype({"a": float})
    assert np.allclose(p.transform_records(records), p.transform(frame), equal_nan=False)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["red", "blue", "green", "3", ""]),
            st.none(),
            st.integers(0, 5),
            st.floats(allow_nan=True),
            st.lists(st.integers(), max_size=1),  # unhashable: the row-by-row fallback
        ),
        min_size=1,
        max_size=30,
    )
)
def test_one_hot_encoding_matches_a_cell_by_cell_lookup(values):
    # Given categories that include "3", and values of every kind a caller might pass
    p = Preprocessor([], ["colour"]).fit(pd.DataFrame({"colour": ["red", "blue", "3"]}))
    # When they are encoded
    column = np.empty(len(values), dtype=object)
    for row, value in enumerate(values):
        column[row] = value
    out = p.transform_columns({"colour": column})
    # Then each row has a 1 exactly where the string form of its value is a known category
    names = p.categories_["colour"]
    expected = np.zeros((len(values), len(names)))
    for row, value in enumerate(values):
        key = None if value is None else (value if isinstance(value, str) else str(value))
        if key in names:
            expected[row, names.index(key)] = 1.0
    assert np.array_equal(out, expected)
