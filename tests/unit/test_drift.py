"""Drift statistics against scipy reference values, edge cases and persistence.

Binning error bounds asserted here (and documented in ``sluice.monitoring.stats``):

* KS: ``D_binned <= D_exact <= D_binned + max over fine bins of max(baseline share, target share)``
  (the CDFs can only separate further inside a bin by that bin's mass), and ``D_binned ==
  D_exact`` when every distinct baseline value has its own bin (integer / low-cardinality data).
* Wasserstein-1: exact when every fine bin holds one distinct value; otherwise off by at most the
  mean absolute deviation of each sample from its bin means (triangle inequality).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from sluice.errors import SluiceError
from sluice.monitoring.compare import MIN_CATEGORY_COUNT, OTHER_LABEL
from sluice.monitoring.policy import DriftPolicy
from sluice.monitoring.profile import DriftProfile
from sluice.monitoring.report import DriftReport
from sluice.monitoring.sketch import TargetSketch
from sluice.monitoring.stats import (
    PSI_EMPTY_BIN,
    chi2_from_counts,
    js_distance,
    ks_from_counts,
    missing_rate_test,
    psi,
    wasserstein_from_sketch,
)


def _fine_bins(profile: DriftProfile, name: str) -> tuple[np.ndarray, np.ndarray]:
    feature = profile.to_dict()["features"][name]
    return np.asarray(feature["cdf_edges"]), np.asarray(feature["bin_edges"])


def _bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value on ``[e[i-1], e[i])`` bins open at both ends, computed independently."""
    return np.searchsorted(edges, values, side="right")


# ------------------------------------------------------------------------------------------
# Statistics on counts
# ------------------------------------------------------------------------------------------


def test_psi_matches_the_formula_on_hand_computed_counts():
    # proportions .1 .2 .3 .4 vs .4 .3 .2 .1:
    # .3 ln 4 + .1 ln 1.5 + (-.1) ln(2/3) + (-.3) ln(1/4) = .6 ln 4 + .2 ln 1.5
    expected = 0.6 * math.log(4) + 0.2 * math.log(1.5)
    assert psi([10, 20, 30, 40], [40, 30, 20, 10]) == pytest.approx(expected, rel=1e-12)
    assert psi([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(expected, rel=1e-12)  # scale-free


def test_psi_gives_empty_bins_the_floor_proportion():
    # baseline .5 .5 0 vs target .25 .25 .5: the empty baseline bin counts as PSI_EMPTY_BIN
    expected = 2 * (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.5 - PSI_EMPTY_BIN) * math.log(0.5 / PSI_EMPTY_BIN)
    assert psi([5, 5, 0], [1, 1, 2]) == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(psi([1, 0], [0, 1]))


def test_statistics_on_an_empty_side_are_none_not_nan():
    for fn in (psi, js_distance, ks_from_counts, chi2_from_counts):
        assert fn([0, 0, 0], [1, 2, 3]) is None
        assert fn([1, 2, 3], [0, 0, 0]) is None
    assert wasserstein_from_sketch([0, 0], [0, 0], [1, 1], [1, 2]) is None
    assert missing_rate_test(0, 0, 1, 10) is None


def test_js_distance_equals_scipy_jensenshannon_base_2():
    rng = np.random.default_rng(7)
    for _ in range(50):
        k = int(rng.integers(2, 30))
        b = rng.integers(0, 50, size=k).astype(float)
        t = rng.integers(0, 50, size=k).astype(float)
        b[0] += 1  # never an empty side
        t[-1] += 1
        assert js_distance(b, t) == pytest.approx(jensenshannon(b, t, base=2), abs=1e-12)
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)


def test_chi2_without_pooling_equals_scipy_chi2_contingency():
    rng = np.random.default_rng(3)
    for _ in range(30):
        k = int(rng.integers(2, 12))
        b = rng.integers(20, 500, size=k).astype(float)
        t = rng.integers(20, 500, size=k).astype(float)
        statistic, p_value, dof = chi2_from_counts(b, t, min_expected=0)
        ref = stats.chi2_contingency(np.vstack([b, t]), correction=False)
        assert statistic == pytest.approx(ref.statistic, rel=1e-10)
        assert p_value == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
        assert dof == ref.dof


def test_chi2_goodness_of_fit_limit_matches_scipy_chisquare():
    # With a baseline far larger than the target the homogeneity test tends to the
    # goodness-of-fit test of the target against the baseline proportions.
    proportions = np.array([0.5, 0.3, 0.2])
    target = np.array([60.0, 25.0, 15.0])
    baseline = proportions * 1e9
    statistic, p_value, _ = chi2_from_counts(baseline, target, min_expected=0)
    ref = stats.chisquare(target, proportions * target.sum())
    assert statistic == pytest.approx(ref.statistic, rel=1e-6)
    assert p_value == pytest.approx(ref.pvalue, rel=1e-5)


def test_chi2_pools_the_rarest_cells_until_each_expects_five_rows_of_the_smaller_sample():
    baseline = np.array([1000.0, 800.0, 150.0, 30.0, 0.0])
    target = np.array([50.0, 40.0, 5.0, 3.0, 2.0])  # 100 rows; the last category is unseen
    # expected rows of the smaller sample per cell: (b + t) * 100 / 2080
    # = 50.5, 40.4, 7.45, 1.59, 0.10: 0.10 + 1.59 < 5, + 7.45 >= 5, so the three rarest pool
    pooled_b = [1000.0, 800.0, 180.0]
    pooled_t = [50.0, 40.0, 10.0]
    statistic, p_value, dof = chi2_from_counts(baseline, target)
    ref = stats.chi2_contingency(np.vstack([pooled_b, pooled_t]), correction=False)
    assert (statistic, dof) == (pytest.approx(ref.statistic), ref.dof)
    assert p_value == pytest.approx(ref.pvalue)
    # the pooling follows the column totals, so swapping the samples changes nothing
    assert chi2_from_counts(target, baseline) == pytest.approx((statistic, p_value, dof))


def test_chi2_keeps_an_unseen_category_with_enough_rows_in_its_own_cell():
    baseline = np.array([5_000.0, 5_000.0, 0.0])
    target = np.array([4_900.0, 4_900.0, 200.0])
    statistic, _, dof = chi2_from_counts(baseline, target)
    ref = stats.chi2_contingency(np.vstack([baseline, target]), correction=False)
    assert statistic == pytest.approx(ref.statistic) and dof == 2


def test_chi2_of_a_table_pooled_into_one_cell_is_defined():
    assert chi2_from_counts([100.0, 50.0], [1.0, 0.0]) == (0.0, 1.0, 0)


def test_ks_from_counts_is_exact_on_integer_data_and_uses_the_asymptotic_p_value():
    rng = np.random.default_rng(11)
    baseline = pd.DataFrame({"x": rng.poisson(4, size=20_000).astype(float)})
    target = pd.DataFrame({"x": rng.poisson(4.3, size=3_000).astype(float)})
    profile = DriftProfile().fit(baseline)
    feature = profile.compare(target)["x"]
    ref = stats.ks_2samp(baseline["x"], target["x"], method="asymp")
    assert feature.statistic == pytest.approx(ref.statistic, abs=1e-12)
    en = 20_000 * 3_000 / 23_000
    assert feature.p_value == pytest.approx(stats.kstwobign.sf(math.sqrt(en) * ref.statistic), rel=1e-9)
    # kstwobign and scipy's finite-n kstwo agree closely at this size
    assert feature.p_value == pytest.approx(ref.pvalue, rel=0.05, abs=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_ks_binned_statistic_is_within_the_documented_bound_of_scipy(seed):
    rng = np.random.default_rng(seed)
    baseline = rng.normal(size=5_000)
    target = rng.normal(
        loc=rng.uniform(-0.3, 0.3), scale=rng.uniform(0.8, 1.3), size=int(rng.integers(50, 4_000))
    )
    profile = DriftProfile().fit(pd.DataFrame({"x": baseline}))
    feature = profile.compare(pd.DataFrame({"x": target}))["x"]
    exact = stats.ks_2samp(baseline, target, method="asymp").statistic
    cdf_edges, _ = _fine_bins(profile, "x")
    n_fine = cdf_edges.size + 1
    b_share = np.bincount(_bin_index(baseline, cdf_edges), minlength=n_fine) / baseline.size
    t_share = np.bincount(_bin_index(target, cdf_edges), minlength=n_fine) / target.size
    bound = float(np.max(np.maximum(b_share, t_share)))
    assert feature.statistic <= exact + 1e-12
    assert exact <= feature.statistic + bound + 1e-12
    # the binned test is never less conservative than the exact asymptotic one
    assert (
        feature.p_value
        >= stats.kstwobign.sf(math.sqrt(baseline.size * target.size / (baseline.size + target.size)) * exact)
        - 1e-12
    )


def test_wasserstein_is_exact_when_every_bin_holds_one_value():
    rng = np.random.default_rng(5)
    baseline = rng.integers(0, 30, size=10_000).astype(float)
    target = rng.integers(3, 40, size=2_000).astype(float)  # also values outside the baseline range
    profile = DriftProfile().fit(pd.DataFrame({"x": baseline}))
    feature = profile.compare(pd.DataFrame({"x": target}))["x"]
    assert feature.wasserstein == pytest.approx(stats.wasserstein_distance(baseline, target), rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_wasserstein_is_within_the_within_bin_deviation_bound_of_scipy(seed):
    rng = np.random.default_rng(100 + seed)
    baseline = rng.lognormal(size=8_000)
    target = rng.lognormal(mean=rng.uniform(-0.5, 0.5), size=1_500)
    profile = DriftProfile().fit(pd.DataFrame({"x": baseline}))
    feature = profile.compare(pd.DataFrame({"x": target}))["x"]
    exact = stats.wasserstein_distance(baseline, target)
    cdf_edges, _ = _fine_bins(profile, "x")

    def within_bin_mad(values: np.ndarray) -> float:
        idx = _bin_index(values, cdf_edges)
        means = np.bincount(idx, weights=values) / np.maximum(np.bincount(idx), 1)
        return float(np.mean(np.abs(values - means[idx])))

    bound = within_bin_mad(baseline) + within_bin_mad(target)
    assert abs(feature.wasserstein - exact) <= bound + 1e-9
    assert abs(feature.wasserstein - exact) <= 0.05 * exact + 0.02  # and small in practice


def test_wasserstein_from_sketch_equals_scipy_on_bin_means():
    counts_b, sums_b = np.array([2.0, 0.0, 3.0]), np.array([2.0, 0.0, 15.0])  # means 1, -, 5
    counts_t, sums_t = np.array([1.0, 4.0, 0.0]), np.array([0.0, 12.0, 0.0])  # means 0, 3, -
    expected = stats.wasserstein_distance([1.0, 5.0], [0.0, 3.0], [2, 3], [1, 4])
    assert wasserstein_from_sketch(counts_b, sums_b, counts_t, sums_t) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("b_missing", "b_rows", "t_missing", "t_rows"),
    [(10, 1000, 2, 100), (10, 1000, 30, 100), (0, 500, 5, 50), (100, 1000, 0, 40), (3, 7, 4, 9)],
)
def test_missing_rate_test_is_fisher_exact_with_a_doubled_smaller_tail(b_missing, b_rows, t_missing, t_rows):
    table = [[t_missing, t_rows - t_missing], [b_missing, b_rows - b_missing]]
    less = stats.fisher_exact(table, alternative="less").pvalue
    greater = stats.fisher_exact(table, alternative="greater").pvalue
    assert missing_rate_test(b_missing, b_rows, t_missing, t_rows) == pytest.approx(
        min(1.0, 2 * min(less, greater)), rel=1e-9
    )


def test_missing_rate_test_without_any_missing_value_is_one():
    assert missing_rate_test(0, 100, 0, 10) == 1.0
    assert missing_rate_test(100, 100, 10, 10) == 1.0


# ------------------------------------------------------------------------------------------
# Profile: bins, counts and the report's histograms
# ------------------------------------------------------------------------------------------


def test_report_histograms_are_the_raw_data_counted_on_the_coarse_bins():
    rng = np.random.default_rng(2)
    baseline = rng.gamma(2.0, size=4_000)
    target = rng.gamma(2.5, size=700)
    profile = DriftProfile(n_bins=10).fit(pd.DataFrame({"x": baseline}))
    feature = profile.compare(pd.DataFrame({"x": target}))["x"]
    _, bin_edges = _fine_bins(profile, "x")
    b = np.bincount(_bin_index(baseline, bin_edges), minlength=bin_edges.size + 1)
    t = np.bincount(_bin_index(target, bin_edges), minlength=bin_edges.size + 1)
    assert len(feature.bin_labels) == bin_edges.size + 1 == 10
    np.testing.assert_allclose(feature.baseline_hist, b / b.sum())
    np.testing.assert_allclose(feature.target_hist, t / t.sum())
    assert feature.psi == pytest.approx(psi(b, t))
    assert feature.js_distance == pytest.approx(jensenshannon(b, t, base=2))


def test_categorical_report_matches_chi2_contingency_and_names_other_unseen():
    rng = np.random.default_rng(4)
    baseline = pd.DataFrame({"c": rng.choice(["a", "b", "c"], p=[0.5, 0.3, 0.2], size=5_000)})
    target = pd.DataFrame({"c": rng.choice(["a", "b", "c", "new"], p=[0.4, 0.3, 0.2, 0.1], size=2_000)})
    profile = DriftProfile().fit(baseline)
    feature = profile.compare(target)["c"]
    assert feature.bin_labels == ("a", "b", "c", OTHER_LABEL)
    b = np.array([(baseline.c == v).sum() for v in "abc"] + [0.0])
    t = np.array([(target.c == v).sum() for v in "abc"] + [(target.c == "new").sum()])
    np.testing.assert_allclose(feature.target_hist, t / t.sum())
    assert feature.target_hist[-1] == pytest.approx(0.1, abs=0.02)
    # the unseen categories keep their own cell: ~200 target rows are plenty for the test
    pooled = stats.chi2_contingency(np.vstack([b, t]), correction=False)
    assert feature.statistic == pytest.approx(pooled.statistic)
    assert feature.dof == pooled.dof
    assert feature.psi == pytest.approx(psi(b, t))
    assert feature.drifted


def test_max_categories_sends_the_rest_to_other():
    baseline = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 30 + ["c"] * 20})
    profile = DriftProfile(max_categories=2).fit(baseline)
    stored = profile.to_dict()["features"]["c"]
    assert stored["categories"] == ["a", "b"]
    assert stored["other_count"] == 20


def test_dtypes_pick_the_kind_and_categorical_forces_it():
    frame = pd.DataFrame(
        {
            "f": [1.5, 2.5, 3.5],
            "i": [1, 2, 3],
            "s": ["x", "y", "x"],
            "b": [True, False, True],
            "cat": pd.Categorical(["u", "v", "u"]),
            "code": [10, 20, 10],
        }
    )
    profile = DriftProfile(categorical=["code"]).fit(frame)
    assert profile.features_ == {
        "f": "numeric",
        "i": "numeric",
        "s": "categorical",
        "b": "categorical",
        "cat": "categorical",
        "code": "categorical",
    }
    report = profile.compare(frame)
    assert not report.dataset_drift


def test_infinities_count_as_missing_in_numeric_features():
    profile = DriftProfile().fit(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}))
    feature = profile.compare(pd.DataFrame({"x": [1.0, np.inf, -np.inf, np.nan]}))["x"]
    assert feature.target_missing_rate == 0.75
    assert feature.n_target == 1


def test_pyarrow_tables_and_column_mappings_are_accepted():
    import pyarrow as pa

    frame = pd.DataFrame({"x": np.arange(100.0), "c": ["a", "b"] * 50})
    profile = DriftProfile().fit(frame)
    from_arrow = profile.partial(pa.Table.from_pandas(frame))
    from_mapping = profile.partial({"x": frame.x.to_numpy(), "c": frame.c.tolist()})
    assert from_arrow.to_dict() == from_mapping.to_dict() == profile.partial(frame).to_dict()


# ------------------------------------------------------------------------------------------
# Edge cases: defined results, JSON without NaN
# ------------------------------------------------------------------------------------------


EDGE_BASELINE = pd.DataFrame(
    {
        "const": np.full(200, 3.0),
        "all_nan": np.full(200, np.nan),
        "x": np.linspace(-1, 1, 200),
        "c": ["a", "b"] * 100,
    }
)


def _json_roundtrip(report: DriftReport) -> dict:
    text = json.dumps(report.to_dict(), allow_nan=False)
    for value in report.metrics().values():
        assert math.isfinite(value)
    return json.loads(text)


def test_constant_column_compares_equal_to_itself_and_detects_a_new_value():
    profile = DriftProfile().fit(EDGE_BASELINE)
    same = profile.compare(EDGE_BASELINE.iloc[:50])["const"]
    assert (same.statistic, same.psi, same.js_distance, same.wasserstein) == (0.0, 0.0, 0.0, 0.0)
    assert same.p_value == 1.0 and not same.drifted
    # values above and below the constant land in their own bins
    moved = profile.compare(EDGE_BASELINE.assign(const=np.r_[np.full(100, 2.0), np.full(100, 4.0)]))["const"]
    assert moved.statistic == pytest.approx(0.5)
    assert moved.wasserstein == pytest.approx(1.0)
    assert moved.drifted
    assert moved.baseline_hist.count(1.0) == 1


def test_all_nan_column_compares_only_the_missing_rate():
    profile = DriftProfile().fit(EDGE_BASELINE)
    still_nan = profile.compare(EDGE_BASELINE)["all_nan"]
    assert still_nan.statistic is None and still_nan.psi is None and still_nan.wasserstein is None
    assert still_nan.baseline_missing_rate == still_nan.target_missing_rate == 1.0
    assert not still_nan.drifted
    assert "only the missing rate" in still_nan.note
    filled = profile.compare(EDGE_BASELINE.assign(all_nan=1.0))["all_nan"]
    assert filled.target_missing_rate == 0.0
    assert filled.drifted and filled.reasons == ("missing_rate",)
    _json_roundtrip(profile.compare(EDGE_BASELINE))


def test_all_nan_target_column_is_missing_rate_drift():
    profile = DriftProfile().fit(EDGE_BASELINE)
    feature = profile.compare(EDGE_BASELINE.assign(x=np.nan))["x"]
    assert feature.statistic is None and feature.note.startswith("target has no non-missing")
    assert feature.drifted and feature.reasons == ("missing_rate",)


@pytest.mark.parametrize("window", [EDGE_BASELINE.iloc[:0], pd.DataFrame()])
def test_empty_window_gives_no_statistics_and_no_alarm(window):
    profile = DriftProfile().fit(EDGE_BASELINE)
    report = profile.compare(window)
    assert report.target.n_rows == 0
    assert not report.dataset_drift and report.dataset_drift_share == 0.0
    for feature in report.features:
        assert feature.statistic is None and feature.p_value is None and not feature.drifted
        assert feature.note == "empty target window: no statistics"
    data = _json_roundtrip(report)
    assert data["n_drifted"] == 0
    assert set(report.metrics()) >= {"dataset_drift_share", "n_target_rows", "x.drifted"}


def test_unseen_categories_go_to_other_and_drift():
    profile = DriftProfile().fit(EDGE_BASELINE)
    feature = profile.compare(EDGE_BASELINE.assign(c=["zzz"] * 200))["c"]
    assert feature.target_hist == (0.0, 0.0, 1.0)
    assert feature.bin_labels[-1] == OTHER_LABEL
    assert feature.drifted and feature.psi > 1


def test_one_row_window_is_defined_and_does_not_alarm_by_itself():
    profile = DriftProfile().fit(EDGE_BASELINE)
    report = profile.compare(EDGE_BASELINE.iloc[[7]])
    assert report.target.n_rows == 1
    x = report["x"]
    assert x.n_target == 1 and 0 <= x.statistic <= 1 and 0 < x.p_value <= 1
    assert not report.dataset_drift
    _json_roundtrip(report)


def test_one_row_baseline_is_defined():
    profile = DriftProfile().fit(EDGE_BASELINE.iloc[[0]])
    report = profile.compare(EDGE_BASELINE)
    _json_roundtrip(report)
    assert report["x"].statistic is not None


def test_profile_without_features_reports_zero_share():
    profile = DriftProfile().fit(pd.DataFrame(index=range(5)))
    report = profile.compare(pd.DataFrame(index=range(3)))
    assert report.features == () and report.dataset_drift_share == 0.0 and not report.dataset_drift


# ------------------------------------------------------------------------------------------
# Persistence and user errors
# ------------------------------------------------------------------------------------------


def test_profile_sketch_and_report_round_trip_through_json():
    rng = np.random.default_rng(9)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=1_000),
            "k": rng.integers(0, 3, size=1_000),
            "c": rng.choice(["a", "b"], size=1_000),
        }
    )
    profile = DriftProfile(categorical=["k"]).fit(frame)
    restored = DriftProfile.from_dict(json.loads(json.dumps(profile.to_dict(), allow_nan=False)))
    assert restored.fingerprint_ == profile.fingerprint_
    assert restored.features_ == profile.features_
    target = frame.sample(300, random_state=1)
    assert restored.compare(target).to_dict() == profile.compare(target).to_dict()
    sketch = profile.partial(target)
    again = TargetSketch.from_dict(json.loads(json.dumps(sketch.to_dict())), restored)
    assert again.to_dict() == sketch.to_dict()
    report = profile.compare(target, label="window 10:00", baseline_label="training v3")
    assert DriftReport.from_dict(json.loads(json.dumps(report.to_dict()))).to_dict() == report.to_dict()


def test_tampered_profile_is_rejected():
    profile = DriftProfile().fit(pd.DataFrame({"x": np.arange(100.0)}))
    data = profile.to_dict()
    data["features"]["x"]["cdf_edges"] = data["features"]["x"]["cdf_edges"][::-1]
    with pytest.raises(SluiceError, match="strictly increasing"):
        DriftProfile.from_dict(data)
    data = profile.to_dict()
    data["fingerprint"] = "0" * 16
    with pytest.raises(SluiceError, match="fingerprint"):
        DriftProfile.from_dict(data)
    with pytest.raises(SluiceError, match="not a drift profile"):
        DriftProfile.from_dict({"format": "something else"})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"alpha": 0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"correction": "holm-ish"}, "correction"),
        ({"psi_tolerance": -1}, "psi_tolerance"),
        ({"missing_tolerance": float("nan")}, "missing_tolerance"),
        ({"share_tolerance": 1}, "share_tolerance"),
        ({"feature_psi_tolerance": {"x": -0.1}}, "feature_psi_tolerance"),
    ],
)
def test_policy_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(SluiceError, match=field):
        DriftPolicy(**kwargs)


def test_policy_round_trips_and_rejects_unknown_fields():
    policy = DriftPolicy(alpha=0.01, feature_psi_tolerance={"x": 0.3})
    assert DriftPolicy.from_dict(policy.to_dict()) == policy
    with pytest.raises(SluiceError, match="unknown"):
        DriftPolicy.from_dict({"alpah": 0.1})


def test_feature_psi_tolerance_overrides_the_default_for_that_feature():
    rng = np.random.default_rng(12)
    baseline = pd.DataFrame({"x": rng.normal(size=5_000), "y": rng.normal(size=5_000)})
    target = pd.DataFrame({"x": rng.normal(0.5, size=5_000), "y": rng.normal(0.5, size=5_000)})
    profile = DriftProfile().fit(baseline)
    report = profile.compare(target, policy=DriftPolicy(feature_psi_tolerance={"x": 10.0}))
    assert report.drifted_features == ["y"]


def test_user_errors_name_the_column_or_parameter():
    profile = DriftProfile().fit(pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"]}))
    with pytest.raises(SluiceError, match=r"\['c'\]"):
        profile.compare(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(SluiceError, match="'x'"):
        profile.compare(pd.DataFrame({"x": ["one"], "c": ["a"]}))
    with pytest.raises(SluiceError, match="n_bins"):
        DriftProfile(n_bins=1).fit(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(SluiceError, match="cdf_bins"):
        DriftProfile(n_bins=50, cdf_bins=10).fit(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(SluiceError, match="not fitted"):
        DriftProfile().compare(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(SluiceError, match="no column"):
        DriftProfile(features=["nope"]).fit(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(SluiceError, match="pandas DataFrame"):
        profile.partial([1, 2, 3])


def test_categories_rare_in_the_baseline_share_the_other_cell_in_the_chi2_test():
    # "rare" was kept as a category on 9 baseline rows: the chi-squared test pools it with
    # "other/unseen" (MIN_CATEGORY_COUNT), while PSI and the plot still show it on its own.
    assert MIN_CATEGORY_COUNT == 10
    baseline = pd.DataFrame({"c": ["a"] * 600 + ["b"] * 391 + ["rare"] * 9})
    target = pd.DataFrame({"c": ["a"] * 560 + ["b"] * 380 + ["rare"] * 40 + ["new"] * 20})
    feature = DriftProfile().fit(baseline).compare(target)["c"]
    assert feature.bin_labels == ("a", "b", "rare", OTHER_LABEL)
    ref = stats.chi2_contingency([[600, 391, 9], [560, 380, 60]], correction=False)
    assert feature.statistic == pytest.approx(ref.statistic)
    assert feature.dof == ref.dof == 2
    assert feature.psi == pytest.approx(psi([600, 391, 9, 0], [560, 380, 40, 20]))


def test_a_few_rows_of_an_unseen_category_are_detected_by_fishers_test_on_other():
    # 5 rows of a category never seen in 20,000 baseline rows: the chi-squared cell expects
    # under 5 rows and is pooled, but Fisher's exact test on "other/unseen" vs the rest is not.
    baseline = pd.DataFrame({"c": ["a"] * 12_000 + ["b"] * 8_000})
    target = pd.DataFrame({"c": ["a"] * 1_197 + ["b"] * 798 + ["new"] * 5})
    feature = DriftProfile().fit(baseline).compare(target)["c"]
    chi2_p = chi2_from_counts([12_000, 8_000, 0], [1_197, 798, 5])[1]
    fisher_p = missing_rate_test(0, 20_000, 5, 2_000)
    assert chi2_p > 0.5  # pooled away
    assert feature.p_value == pytest.approx(min(1.0, 2 * min(chi2_p, fisher_p)))
    assert feature.p_value < 1e-4
    assert feature.p_value < DriftPolicy().alpha_per_test(2)


def test_categorical_p_value_is_twice_the_smaller_of_chi2_and_fisher_on_other():
    baseline = pd.DataFrame({"c": ["a"] * 500 + ["b"] * 300 + ["z"] * 200})
    target = pd.DataFrame({"c": ["a"] * 260 + ["b"] * 140 + ["z"] * 100})
    feature = DriftProfile(max_categories=2).fit(baseline).compare(target)["c"]  # "z" -> other
    chi2_p = stats.chi2_contingency([[500, 300, 200], [260, 140, 100]], correction=False).pvalue
    less = stats.fisher_exact([[100, 400], [200, 800]], alternative="less").pvalue
    greater = stats.fisher_exact([[100, 400], [200, 800]], alternative="greater").pvalue
    fisher_p = min(1.0, 2 * min(less, greater))
    assert feature.p_value == pytest.approx(min(1.0, 2 * min(chi2_p, fisher_p)))


def test_the_verdict_keeps_significance_and_effect_size_apart():
    # Given a baseline and a 200,000-row window whose `x` moved by 0.05 sigma: certain, but tiny
    rng = np.random.default_rng(0)
    baseline = pd.DataFrame({"x": rng.normal(size=20_000), "y": rng.normal(size=20_000)})
    profile = DriftProfile().fit(baseline)
    small_shift = pd.DataFrame({"x": rng.normal(0.05, 1, 200_000), "y": rng.normal(size=200_000)})
    big_shift = pd.DataFrame({"x": rng.normal(1.0, 1, 5_000), "y": rng.normal(size=5_000)})
    small = profile.compare(profile.partial(small_shift))
    big = profile.compare(profile.partial(big_shift))
    # Then the small move is significant but below the PSI floor: not drift, and it says so
    assert small["x"].p_value < small.alpha_per_test and small["x"].psi <= small.policy.psi_tolerance
    assert (small["x"].drifted, small["x"].verdict) == (False, "significant, below the effect floor")
    assert small["y"].verdict == "not significant"
    assert (big["x"].drifted, big["x"].verdict) == (True, "drifted")
    # and the verdict survives the stored report
    assert DriftReport.from_dict(json.loads(json.dumps(small.to_dict())))["x"].verdict == small["x"].verdict
