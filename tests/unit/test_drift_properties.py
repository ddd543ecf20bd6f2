"""hypothesis properties of the drift library: X vs X, symmetry, mergeability, no silent swaps."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sluice.errors import SluiceError
from sluice.monitoring.profile import DriftProfile
from sluice.monitoring.sketch import TargetSketch
from sluice.monitoring.stats import (
    chi2_from_counts,
    js_distance,
    ks_from_counts,
    psi,
    wasserstein_from_sketch,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
numeric_value = st.one_of(finite, finite, finite, st.just(np.nan), st.sampled_from([0.0, 1.0, -2.5]))
category = st.one_of(st.sampled_from(["a", "b", "c", "d", "é", ""]), st.none())


@st.composite
def frames(draw, min_rows: int = 0, max_rows: int = 60) -> pd.DataFrame:
    """Mixed frames with NaN, None, repeated values, constants and rare categories."""
    n = draw(st.integers(min_rows, max_rows))
    return pd.DataFrame(
        {
            "x": np.array(draw(st.lists(numeric_value, min_size=n, max_size=n)), dtype=float),
            "k": np.array(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)), dtype=float),
            "c": pd.Series(draw(st.lists(category, min_size=n, max_size=n)), dtype=object),
        }
    )


counts = hnp.arrays(np.float64, st.integers(2, 25), elements=st.integers(0, 1_000).map(float))


def _statistics(report) -> dict:
    out = {}
    for f in report.features:
        out[f.name] = (f.statistic, f.p_value, f.dof, f.psi, f.js_distance, f.drifted, f.target_hist)
    return out


# ------------------------------------------------------------------------------------------
# X against X
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(frames(min_rows=1))
def test_x_against_x_shows_no_drift_and_zero_statistics(frame):
    profile = DriftProfile().fit(frame)
    report = profile.compare(frame)
    assert not report.dataset_drift
    assert report.n_drifted == 0
    for f in report.features:
        if f.statistic is None:  # a column with no non-missing values
            assert f.n_baseline == f.n_target == 0
            continue
        assert f.statistic == 0.0
        assert f.p_value == 1.0
        assert f.psi == 0.0 and f.js_distance == 0.0
        if f.wasserstein is not None:
            values = np.abs(frame[f.name].to_numpy(dtype=float))
            scale = 1.0 + np.max(values[np.isfinite(values)], initial=0.0)
            assert f.wasserstein == pytest.approx(0.0, abs=1e-9 * scale)
        assert f.baseline_hist == f.target_hist
        assert f.baseline_missing_rate == f.target_missing_rate
        assert f.missing_p_value == 1.0


@SETTINGS
@given(frames(min_rows=1), st.integers(0, 2**32 - 1))
def test_a_shuffled_copy_is_the_same_window(frame, seed):
    profile = DriftProfile().fit(frame)
    shuffled = frame.sample(frac=1.0, random_state=seed % (2**31)).reset_index(drop=True)
    assert _statistics(profile.compare(shuffled)) == _statistics(profile.compare(frame))


# ------------------------------------------------------------------------------------------
# Symmetry
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(counts, st.data())
def test_symmetric_statistics_are_symmetric(a, data):
    b = data.draw(hnp.arrays(np.float64, a.size, elements=st.integers(0, 1_000).map(float)))
    assume(a.sum() > 0 and b.sum() > 0)
    assert js_distance(a, b) == pytest.approx(js_distance(b, a), abs=1e-12)
    assert psi(a, b) == pytest.approx(psi(b, a), rel=1e-12, abs=1e-15)
    assert ks_from_counts(a, b) == pytest.approx(ks_from_counts(b, a), rel=1e-12, abs=1e-15)
    chi_ab = chi2_from_counts(a, b, min_expected=0)
    chi_ba = chi2_from_counts(b, a, min_expected=0)
    assert chi_ab == pytest.approx(chi_ba, rel=1e-9, abs=1e-12)
    pooled_ab, pooled_ba = chi2_from_counts(a, b), chi2_from_counts(b, a)  # default pooling
    assert pooled_ab == pytest.approx(pooled_ba, rel=1e-9, abs=1e-12)
    sums_a = a * np.arange(a.size)  # bin means 0, 1, 2, ...
    sums_b = b * (np.arange(b.size) + 0.25)
    assert wasserstein_from_sketch(a, sums_a, b, sums_b) == pytest.approx(
        wasserstein_from_sketch(b, sums_b, a, sums_a), rel=1e-12, abs=1e-12
    )


@SETTINGS
@given(counts, st.data())
def test_statistics_stay_in_their_ranges(a, data):
    b = data.draw(hnp.arrays(np.float64, a.size, elements=st.integers(0, 1_000).map(float)))
    assume(a.sum() > 0 and b.sum() > 0)
    assert 0.0 <= js_distance(a, b) <= 1.0 + 1e-12
    assert psi(a, b) >= 0.0
    d, p = ks_from_counts(a, b)
    assert 0.0 <= d <= 1.0 and 0.0 <= p <= 1.0
    statistic, p, dof = chi2_from_counts(a, b)
    assert statistic >= 0.0 and 0.0 <= p <= 1.0 and dof >= 0


# ------------------------------------------------------------------------------------------
# Mergeability: chunked partial + merge == one-shot sketch
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(frames(min_rows=1), frames(), st.lists(st.integers(0, 60), max_size=5))
def test_chunked_partials_merge_to_the_one_shot_sketch(baseline, target, cuts):
    profile = DriftProfile(n_bins=5, cdf_bins=20).fit(baseline)
    bounds = sorted({0, len(target), *(c for c in cuts if c <= len(target))})
    chunks = [target.iloc[lo:hi] for lo, hi in itertools.pairwise(bounds)]
    whole = profile.partial(target)
    merged = profile.sketch(chunks)
    left, right = whole.to_dict(), merged.to_dict()
    assert left["n_rows"] == right["n_rows"] == len(target)
    for name in profile.features_:
        a, b = left["features"][name], right["features"][name]
        assert (a["n_rows"], a["n_missing"], a["counts"]) == (b["n_rows"], b["n_missing"], b["counts"])
        if "sums" in a:
            np.testing.assert_allclose(a["sums"], b["sums"], rtol=1e-9, atol=1e-6)
    # decisions and count-based statistics are exactly the same
    one_shot, chunked = profile.compare(whole), profile.compare(merged)
    assert _statistics(one_shot) == _statistics(chunked)


@SETTINGS
@given(frames(min_rows=1), frames(), frames(), frames())
def test_merge_is_commutative_and_associative(baseline, t1, t2, t3):
    profile = DriftProfile(n_bins=4, cdf_bins=12).fit(baseline)
    a, b, c = (profile.partial(t) for t in (t1, t2, t3))

    def exact(sketch: TargetSketch) -> dict:
        data = sketch.to_dict()
        for feature in data["features"].values():
            feature.pop("sums", None)  # floating-point sums depend on the order of addition
        return data

    assert exact(a.merge(b)) == exact(b.merge(a))
    assert exact(a.merge(b).merge(c)) == exact(a.merge(b.merge(c)))
    assert exact(a.merge(profile.partial(t1.iloc[:0]))) == exact(a)


@SETTINGS
@given(frames(min_rows=1), frames(min_rows=1))
def test_sketches_survive_json_between_workers(baseline, target):
    profile = DriftProfile(n_bins=5, cdf_bins=20).fit(baseline)
    restored_profile = DriftProfile.from_dict(json.loads(json.dumps(profile.to_dict(), allow_nan=False)))
    sketch = profile.partial(target)
    shipped = TargetSketch.from_dict(
        json.loads(json.dumps(sketch.to_dict(), allow_nan=False)), restored_profile
    )
    assert _statistics(restored_profile.compare(shipped)) == _statistics(profile.compare(sketch))


def test_parquet_batches_give_the_same_sketch_as_the_frame(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=10_000), "c": rng.choice(["a", "b", "c"], size=10_000)})
    frame.loc[::17, "x"] = np.nan
    profile = DriftProfile().fit(frame.iloc[:5_000])
    path = tmp_path / "window.parquet"
    frame.to_parquet(path, row_group_size=1_000)
    from_parquet = profile.sketch_parquet(path, batch_rows=777).to_dict()
    one_shot = profile.partial(frame).to_dict()
    for name in ("x", "c"):
        assert from_parquet["features"][name]["counts"] == one_shot["features"][name]["counts"]
        assert from_parquet["features"][name]["n_missing"] == one_shot["features"][name]["n_missing"]
    np.testing.assert_allclose(from_parquet["features"]["x"]["sums"], one_shot["features"]["x"]["sums"])


# ------------------------------------------------------------------------------------------
# Baseline and target can't be swapped or mixed up silently
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(frames(min_rows=2), frames(min_rows=2))
def test_a_sketch_from_another_profile_is_refused(first, second):
    p1 = DriftProfile(n_bins=3, cdf_bins=6).fit(first)
    p2 = DriftProfile(n_bins=3, cdf_bins=6).fit(second)
    assume(p1.fingerprint_ != p2.fingerprint_)
    sketch = p2.partial(second)
    with pytest.raises(SluiceError, match="profile"):
        p1.compare(sketch)
    with pytest.raises(SluiceError, match="different profiles"):
        p1.partial(first).merge(sketch)
    with pytest.raises(SluiceError, match="profile"):
        TargetSketch.from_dict(sketch.to_dict(), p1)


def test_comparing_a_profile_with_a_profile_is_refused():
    frame = pd.DataFrame({"x": np.arange(10.0)})
    profile = DriftProfile().fit(frame)
    with pytest.raises(SluiceError, match="baseline is the profile itself"):
        profile.compare(DriftProfile().fit(frame))


def test_the_report_names_each_side_and_its_size():
    rng = np.random.default_rng(1)
    baseline = pd.DataFrame({"x": rng.normal(size=3_000)})
    target = pd.DataFrame({"x": rng.normal(1.0, size=400)})
    report = DriftProfile().fit(baseline).compare(target, label="prod 10:00", baseline_label="training v3")
    assert (report.baseline.label, report.baseline.n_rows) == ("training v3", 3_000)
    assert (report.target.label, report.target.n_rows) == ("prod 10:00", 400)
    feature = report["x"]
    assert (feature.n_baseline, feature.n_target) == (3_000, 400)
    # the target's mass sits in the upper bins, the baseline's is flat
    assert np.allclose(feature.baseline_hist, 1 / 20, atol=1e-3)
    assert sum(feature.target_hist[10:]) > 0.8


@SETTINGS
@given(frames(min_rows=3), frames(min_rows=3))
def test_swapping_the_roles_changes_which_side_is_the_baseline(first, second):
    # Fitting on the other frame is an explicit act: each report says which rows were its baseline.
    forward = DriftProfile().fit(first).compare(second)
    backward = DriftProfile().fit(second).compare(first)
    assert forward.baseline.n_rows == backward.target.n_rows == len(first)
    assert forward.target.n_rows == backward.baseline.n_rows == len(second)
    for f, b in zip(forward.features, backward.features, strict=True):
        assert (f.n_baseline, f.n_target) == (b.n_target, b.n_baseline)
        assert f.baseline_missing_rate == b.target_missing_rate
        assert f.target_missing_rate == b.baseline_missing_rate
