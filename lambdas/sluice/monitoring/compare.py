"""Per-feature comparison of a baseline with a target window's counts, decided by the policy.

A numeric feature is tested with KS on the fine bins and measured with PSI and Jensen-Shannon
on the coarse ones and Wasserstein on the fine-bin means. A categorical feature is tested with
chi-squared (rare baseline categories pooled with "other/unseen", see ``_pool_rare_with_other``)
combined with Fisher's exact test on "other/unseen", and measured with PSI and Jensen-Shannon on
every category. Both also compare missing-value rates. See :mod:`sluice.monitoring.stats`.
"""

from __future__ import annotations

import numpy as np

from sluice.monitoring.baselines import (
    CategoricalBaseline,
    CategoricalCounts,
    NumericBaseline,
    NumericCounts,
    coarsen,
)
from sluice.monitoring.policy import DriftPolicy
from sluice.monitoring.report import FeatureDrift
from sluice.monitoring.stats import (
    chi2_from_counts,
    js_distance,
    ks_from_counts,
    missing_rate_test,
    psi,
    wasserstein_from_sketch,
)

#: Categories with fewer baseline rows than this share the "other/unseen" cell in the
#: chi-squared test (not in PSI, Jensen-Shannon or the plots); see ``_pool_rare_with_other``.
MIN_CATEGORY_COUNT = 10
OTHER_LABEL = "other/unseen"


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _missing_part(
    baseline: NumericBaseline | CategoricalBaseline,
    counts: NumericCounts | CategoricalCounts,
    policy: DriftPolicy,
    alpha_t: float,
) -> tuple[float | None, float | None, float | None, bool]:
    rate_b = _rate(baseline.n_missing, baseline.n_rows)
    rate_t = _rate(counts.n_missing, counts.n_rows)
    p = missing_rate_test(baseline.n_missing, baseline.n_rows, counts.n_missing, counts.n_rows)
    drifted = (
        p is not None
        and rate_b is not None
        and rate_t is not None
        and p < alpha_t
        and abs(rate_t - rate_b) > policy.missing_tolerance
    )
    return rate_b, rate_t, p, drifted


def _note(n_rows: int, n_baseline: int, n_target: int) -> str | None:
    if n_rows == 0:
        return "empty target window: no statistics"
    if n_baseline == 0:
        return "baseline has no non-missing values: only the missing rate is compared"
    if n_target == 0:
        return "target has no non-missing values: only the missing rate is compared"
    return None


def _decide(
    p_value: float | None, effect: float | None, tolerance: float, missing_drifted: bool, alpha_t: float
) -> tuple[bool, tuple[str, ...], str]:
    """Drifted, why, and the verdict that keeps the test and the effect size apart.

    The verdict is ``"drifted"``, ``"significant, below the effect floor"`` (the test rejects but
    PSI is within tolerance: a real but small change, which is not drift) or ``"not significant"``.
    """
    reasons = []
    significant = p_value is not None and p_value < alpha_t
    if significant and effect is not None and effect > tolerance:
        reasons.append("distribution")
    if missing_drifted:
        reasons.append("missing_rate")
    if reasons:
        verdict = "drifted"
    elif significant:
        verdict = "significant, below the effect floor"
    else:
        verdict = "not significant"
    return bool(reasons), tuple(reasons), verdict


def _hist(counts: np.ndarray) -> tuple[float, ...]:
    total = counts.sum()
    return tuple(float(c / total) for c in counts) if total > 0 else tuple(0.0 for _ in counts)


def compare_numeric(
    name: str, baseline: NumericBaseline, counts: NumericCounts, policy: DriftPolicy, alpha_t: float
) -> FeatureDrift:
    ks = ks_from_counts(baseline.cdf_counts, counts.counts)
    coarse_b = baseline.bin_counts
    coarse_t = coarsen(counts.counts, baseline.fine_to_coarse, coarse_b.size)
    psi_value = psi(coarse_b, coarse_t)
    rate_b, rate_t, p_missing, missing_drifted = _missing_part(baseline, counts, policy, alpha_t)
    p_value = ks[1] if ks else None
    drifted, reasons, verdict = _decide(
        p_value, psi_value, policy.psi_tolerance_for(name), missing_drifted, alpha_t
    )
    n_b, n_t = int(baseline.cdf_counts.sum()), int(counts.counts.sum())
    return FeatureDrift(
        name=name,
        kind="numeric",
        test="ks",
        statistic=ks[0] if ks else None,
        p_value=p_value,
        dof=None,
        psi=psi_value,
        js_distance=js_distance(coarse_b, coarse_t),
        wasserstein=wasserstein_from_sketch(
            baseline.cdf_counts, baseline.cdf_sums, counts.counts, counts.sums
        ),
        baseline_missing_rate=rate_b,
        target_missing_rate=rate_t,
        missing_p_value=p_missing,
        n_baseline=n_b,
        n_target=n_t,
        drifted=drifted,
        reasons=reasons,
        verdict=verdict,
        note=_note(counts.n_rows, n_b, n_t),
        bin_labels=numeric_bin_labels(baseline.bin_edges),
        baseline_hist=_hist(coarse_b),
        target_hist=_hist(coarse_t),
    )


def _pool_rare_with_other(
    baseline_counts: np.ndarray, target_counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge the categories seen fewer than ``MIN_CATEGORY_COUNT`` times in the baseline into
    the last ("other/unseen") cell, for the chi-squared test only.

    Which categories the profile keeps was decided on the baseline's own counts, so a rare kept
    category is over-represented in the baseline and the "other" bucket under-represented: a
    baseline-selection bias that made a 1,000-row baseline with a long tail of categories alarm
    on up to 47% of no-drift 5,000-row windows. Pooling the rare categories with "other" makes
    the selection cancel within the cell (the bias shrinks as the threshold grows, to about
    ``2/3`` of a row per category near it). Unseen categories still land in that cell.
    """
    rare = baseline_counts < MIN_CATEGORY_COUNT
    rare[-1] = True
    return (
        np.append(baseline_counts[~rare], baseline_counts[rare].sum()),
        np.append(target_counts[~rare], target_counts[rare].sum()),
    )


def compare_categorical(
    name: str, baseline: CategoricalBaseline, counts: CategoricalCounts, policy: DriftPolicy, alpha_t: float
) -> FeatureDrift:
    pooled_b, pooled_t = _pool_rare_with_other(baseline.counts, counts.counts)
    chi2 = chi2_from_counts(pooled_b, pooled_t)
    psi_value = psi(baseline.counts, counts.counts)
    rate_b, rate_t, p_missing, missing_drifted = _missing_part(baseline, counts, policy, alpha_t)
    p_value = None
    if chi2:
        # Chi-squared pools a cell expecting few rows, so a handful of rows of a never-seen
        # category would be diluted; Fisher's exact test on "other/unseen" vs the rest catches
        # them. Both p-values are valid, so twice the smaller one is (Bonferroni).
        p_other = missing_rate_test(
            int(pooled_b[-1]), int(pooled_b.sum()), int(pooled_t[-1]), int(pooled_t.sum())
        )
        p_value = min(1.0, 2.0 * min(chi2[1], p_other if p_other is not None else 1.0))
    drifted, reasons, verdict = _decide(
        p_value, psi_value, policy.psi_tolerance_for(name), missing_drifted, alpha_t
    )
    n_b, n_t = int(baseline.counts.sum()), int(counts.counts.sum())
    return FeatureDrift(
        name=name,
        kind="categorical",
        test="chi2",
        statistic=chi2[0] if chi2 else None,
        p_value=p_value,
        dof=chi2[2] if chi2 else None,
        psi=psi_value,
        js_distance=js_distance(baseline.counts, counts.counts),
        wasserstein=None,
        baseline_missing_rate=rate_b,
        target_missing_rate=rate_t,
        missing_p_value=p_missing,
        n_baseline=n_b,
        n_target=n_t,
        drifted=drifted,
        reasons=reasons,
        verdict=verdict,
        note=_note(counts.n_rows, n_b, n_t),
        bin_labels=(*(str(c) for c in baseline.categories), OTHER_LABEL),
        baseline_hist=_hist(baseline.counts),
        target_hist=_hist(counts.counts),
    )


def numeric_bin_labels(edges: np.ndarray) -> tuple[str, ...]:
    """Readable labels of the bins ``(-inf, e0), [e0, e1), ..., [e_last, inf)``.

    A bin ``[v, nextafter(v))`` that isolates a heavy value reads ``= v``, and the bin after it
    reads ``(v, next)``.
    """
    if edges.size == 0:
        return ("all values",)
    fmt = "{:.4g}".format
    labels = [f"< {fmt(edges[0])}"]
    for i in range(1, edges.size + 1):
        low = edges[i - 1]
        after_atom = i >= 2 and edges[i - 2] == np.nextafter(low, -np.inf)
        shown = fmt(edges[i - 2]) if after_atom else fmt(low)
        opening = "(" if after_atom else "["
        if i == edges.size:
            labels.append(f"> {shown}" if after_atom else f">= {shown}")
        elif edges[i] == np.nextafter(low, np.inf):
            labels.append(f"= {fmt(low)}")
        else:
            labels.append(f"{opening}{shown}, {fmt(edges[i])})")
    return tuple(labels)
