"""Calibration of the default DriftPolicy by simulation (issue 6, "Calibration" acceptance).

No-drift windows are fresh draws from the distribution the baseline (a training partition) was
drawn from. The features cover what trips drift tests up in practice: skew, integer values with
ties, a zero-inflated column, missing values, a dominant category, a rare category and a long tail
of categories beyond ``max_categories``. Every simulation is seeded, so the measured rates are
reproducible; the asserted bounds are the acceptance criteria themselves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sluice.monitoring.policy import DriftPolicy
from sluice.monitoring.profile import DriftProfile

N_WINDOWS = 300  # per window size; the acceptance asks for >= 200
BASELINE_ROWS = 20_000
CATEGORIES = np.array(["a", "b", "c", "d", "e", "f"], dtype=object)
CATEGORY_P = [0.5, 0.2, 0.15, 0.1, 0.04, 0.01]
TAIL = np.array([f"m{i}" for i in range(200)], dtype=object)
NUMERIC_SD = {"normal": 1.0, "lognormal": float(np.sqrt((np.e - 1) * np.e)), "poisson": float(np.sqrt(3.0))}


def draw(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` rows from the reference distribution, generated column-wise (vectorised)."""
    with_missing = rng.normal(size=n)
    with_missing[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "normal": rng.normal(size=n),
            "lognormal": rng.lognormal(size=n),
            "poisson": rng.poisson(3, size=n).astype(float),
            "zero_inflated": np.where(rng.random(n) < 0.3, 0.0, rng.gamma(2.0, size=n)),
            "with_missing": with_missing,
            "category": CATEGORIES[rng.choice(CATEGORIES.size, p=CATEGORY_P, size=n)],
            "flag": rng.random(n) < 0.3,
            "long_tail": TAIL[np.minimum(rng.zipf(1.5, size=n), TAIL.size) - 1],
        }
    )


@pytest.fixture(scope="module")
def profile() -> DriftProfile:
    return DriftProfile().fit(draw(BASELINE_ROWS, np.random.default_rng(2026)))


def test_profile_covers_numeric_and_categorical_features(profile):
    assert list(profile.features_.values()).count("categorical") == 3
    assert list(profile.features_.values()).count("numeric") == 5


@pytest.mark.parametrize("window_rows", [50, 500, 5_000])
def test_default_policy_false_alarm_rate_is_at_most_5_percent(profile, window_rows):
    # Given windows drawn from the baseline's own distribution
    rng = np.random.default_rng(window_rows)
    # When each is compared with the default policy
    alarms = sum(profile.compare(draw(window_rows, rng)).dataset_drift for _ in range(N_WINDOWS))
    # Then the dataset alarm fires in at most 5% of them
    assert alarms / N_WINDOWS <= 0.05, f"{alarms} false alarms in {N_WINDOWS} windows of {window_rows}"


@pytest.mark.parametrize("window_rows", [50, 500, 5_000])
def test_false_alarm_rate_holds_for_a_small_baseline_too(window_rows):
    # Two-sample tests: a 1,000-row baseline keeps the level as well.
    rng = np.random.default_rng(10_000 + window_rows)
    small = DriftProfile().fit(draw(1_000, rng))
    alarms = sum(small.compare(draw(window_rows, rng)).dataset_drift for _ in range(200))
    assert alarms / 200 <= 0.05


@pytest.mark.parametrize("feature", sorted(NUMERIC_SD))
def test_half_sigma_mean_shift_in_one_feature_at_5000_rows_raises_the_alarm(profile, feature):
    rng = np.random.default_rng(7)
    for _ in range(20):
        window = draw(5_000, rng)
        window[feature] += 0.5 * NUMERIC_SD[feature]
        report = profile.compare(window)
        assert report.dataset_drift
        assert report.drifted_features == [feature]
        assert report[feature].reasons == ("distribution",)


def test_shift_in_one_category_share_at_5000_rows_raises_the_alarm(profile):
    rng = np.random.default_rng(8)
    for _ in range(20):
        window = draw(5_000, rng)
        shifted = CATEGORIES[rng.choice(CATEGORIES.size, p=[0.3, 0.4, 0.15, 0.1, 0.04, 0.01], size=5_000)]
        report = profile.compare(window.assign(category=shifted))
        assert report.dataset_drift and report.drifted_features == ["category"]


def test_missing_rate_jump_at_5000_rows_raises_the_alarm(profile):
    rng = np.random.default_rng(9)
    window = draw(5_000, rng)
    window.loc[rng.random(5_000) < 0.2, "normal"] = np.nan
    report = profile.compare(window)
    assert report.dataset_drift and report["normal"].reasons == ("missing_rate",)


def test_large_windows_are_not_flagged_for_negligible_shifts(profile):
    # 0.05 sigma at 5,000 rows: often significant for a test on its own, but below the PSI floor.
    rng = np.random.default_rng(10)
    alarms = 0
    for _ in range(50):
        window = draw(5_000, rng)
        window["normal"] += 0.05
        alarms += profile.compare(window).dataset_drift
    assert alarms / 50 <= 0.05


def test_policy_without_correction_is_looser_than_the_default(profile):
    # The Bonferroni correction is what keeps the family-wise rate: without it, 16 tests at 5%
    # each alarm far more often. This guards the default against being "simplified" away.
    rng = np.random.default_rng(11)
    loose = DriftPolicy(correction="none", psi_tolerance=0.0, missing_tolerance=0.0)
    windows = [draw(500, rng) for _ in range(100)]
    default_rate = np.mean([profile.compare(w).dataset_drift for w in windows])
    loose_rate = np.mean([profile.compare(w, policy=loose).dataset_drift for w in windows])
    assert loose_rate > 0.2
    assert default_rate <= 0.05
