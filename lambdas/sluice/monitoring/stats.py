"""Drift statistics on binned counts: the tests and distances a drift report is made of.

Each function takes the baseline's counts first and the target's second; every one of them is
symmetric in its two arguments and returns ``None`` when either side has no values.

numeric     Kolmogorov-Smirnov two-sample statistic from the binned CDFs, with the asymptotic
            (``kstwobign``) p-value for the effective size ``n m / (n + m)``. Exact (equal to
            ``scipy.stats.ks_2samp``) when each baseline value with mass has its own bin, as for
            integer or low-cardinality data; otherwise it is the supremum over the fine edges,
            at most one fine bin's mass below the exact statistic, which only makes the test
            more conservative. PSI and Jensen-Shannon distance on the coarse bins. Wasserstein-1
            between the fine-bin means, weighted by counts: exact when each bin holds a single
            value, otherwise off by at most the within-bin mean absolute deviations.
categorical Pearson chi-squared test on the 2 x k table of baseline and target counts
            (``chi2_contingency`` without continuity correction). Before the test, categories
            seen fewer than ``MIN_CATEGORY_COUNT`` times in the baseline join the
            "other/unseen" cell (the kept categories were chosen on the baseline's counts, and
            testing that selection against fresh data is biased), then the categories
            least frequent in both samples together are pooled until each pooled cell expects
            at least ``MIN_EXPECTED`` rows of the smaller sample: the pooling depends on the
            column totals only, so the test keeps its level in small windows. The reported
            p-value is twice the smaller of the chi-squared p-value and Fisher's exact test of
            the "other/unseen" cell against the rest, so a few rows of a never-seen category
            are not lost in a pooled cell. PSI and Jensen-Shannon
            distance on the unpooled categories including "other/unseen".
missing     Missing-value rates; a two-sided test that the target rate equals the baseline
            rate (Fisher's exact test, as a doubled one-sided hypergeometric tail).

How the statistics are applied per feature is in :mod:`sluice.monitoring.compare`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

#: Proportion given to an empty bin in PSI, so one empty bin cannot make PSI infinite.
#: The same constant as Evidently and NannyML use.
PSI_EMPTY_BIN = 1e-4
#: Expected count of the smaller sample each pooled chi-squared cell must reach (Cochran's rule).
MIN_EXPECTED = 5.0


def _proportions(counts: ArrayLike) -> np.ndarray | None:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else None


def psi(baseline_counts: ArrayLike, target_counts: ArrayLike) -> float | None:
    """Population stability index ``sum((t - b) * ln(t / b))`` over bins.

    Empty bins get proportion ``PSI_EMPTY_BIN``. Symmetric in its arguments. ``None`` when either
    side has no values.
    """
    b, t = _proportions(baseline_counts), _proportions(target_counts)
    if b is None or t is None:
        return None
    b = np.where(b == 0, PSI_EMPTY_BIN, b)
    t = np.where(t == 0, PSI_EMPTY_BIN, t)
    return float(np.sum((t - b) * np.log(t / b)))


def js_distance(baseline_counts: ArrayLike, target_counts: ArrayLike) -> float | None:
    """Jensen-Shannon distance with base-2 logarithms, in [0, 1].

    Equal to ``scipy.spatial.distance.jensenshannon(b, t, base=2)``. ``None`` when either side
    has no values.
    """
    b, t = _proportions(baseline_counts), _proportions(target_counts)
    if b is None or t is None:
        return None
    m = (b + t) / 2
    divergence = 0.5 * (np.sum(_rel_entr(b, m)) + np.sum(_rel_entr(t, m))) / math.log(2)
    return float(math.sqrt(max(divergence, 0.0)))


def _rel_entr(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    out = np.zeros_like(p)
    nz = p > 0
    out[nz] = p[nz] * np.log(p[nz] / q[nz])
    return out


def ks_from_counts(
    baseline_counts: ArrayLike, target_counts: ArrayLike
) -> tuple[float, float] | None:
    """Two-sample Kolmogorov-Smirnov statistic and asymptotic p-value from counts on shared bins.

    The statistic is the largest gap between the two cumulative distributions at the bin
    edges. The p-value is ``kstwobign.sf(sqrt(n m / (n + m)) * D)``, the limit distribution
    that ``scipy.stats.ks_2samp(method="asymp")`` approximates with the much slower ``kstwo``;
    both lead to the same decisions at the sizes drift monitoring sees. ``None`` when either
    side has no values.
    """
    b = np.asarray(baseline_counts, dtype=np.float64)
    t = np.asarray(target_counts, dtype=np.float64)
    n, m = b.sum(), t.sum()
    if n <= 0 or m <= 0:
        return None
    d = float(np.max(np.abs(np.cumsum(b) / n - np.cumsum(t) / m), initial=0.0))
    d = min(max(d, 0.0), 1.0)
    effective = n * m / (n + m)
    return d, float(stats.kstwobign.sf(math.sqrt(effective) * d))


def chi2_from_counts(
    baseline_counts: ArrayLike,
    target_counts: ArrayLike,
    *,
    min_expected: float = MIN_EXPECTED,
) -> tuple[float, float, int] | None:
    """Pearson chi-squared test of homogeneity on a 2 x k table: statistic, p-value, dof.

    Cells are first pooled, least frequent in both samples together first, until each pooled
    cell expects ``min_expected`` rows in the smaller sample (Cochran's rule for the 2 x k
    table; ``min_expected=0`` pools nothing but cells empty on both sides). The pooling depends
    only on the column totals, which the test conditions on, so it keeps the level, and a
    category that only the target has (an unseen one) keeps a cell of its own. Symmetric in its
    arguments. Equal to
    ``scipy.stats.chi2_contingency([b, t], correction=False)`` on the pooled table. A table
    pooled into one cell gives ``(0.0, 1.0, 0)``. ``None`` when either side has no values.
    """
    b = np.asarray(baseline_counts, dtype=np.float64)
    t = np.asarray(target_counts, dtype=np.float64)
    n_b, n_t = b.sum(), t.sum()
    if n_b <= 0 or n_t <= 0:
        return None
    groups = _pool_cells((b + t) * (min(n_b, n_t) / (n_b + n_t)), min_expected)
    pb = np.bincount(groups, weights=b)
    pt = np.bincount(groups, weights=t)
    keep = (pb + pt) > 0
    pb, pt = pb[keep], pt[keep]
    dof = pb.size - 1
    if dof < 1:
        return 0.0, 1.0, 0
    total = n_b + n_t
    col = pb + pt
    statistic = 0.0
    for observed, row_total in ((pb, n_b), (pt, n_t)):
        expected = col * (row_total / total)
        statistic += float(np.sum((observed - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, dof)), int(dof)


def _pool_cells(expected: np.ndarray, min_expected: float) -> np.ndarray:
    """Group index per cell: smallest cells merged until each group reaches ``min_expected``."""
    groups = np.arange(expected.size)
    if min_expected <= 0 or expected.size < 2:
        return groups
    group, acc, pending = 0, 0.0, False
    for cell in np.argsort(expected, kind="stable"):
        groups[cell] = group
        acc += expected[cell]
        pending = True
        if acc >= min_expected:
            group, acc, pending = group + 1, 0.0, False
    if pending and group > 0:  # the largest cells left an unfinished group: fold it into the last one
        groups[groups == group] = group - 1
    return groups


def wasserstein_from_sketch(
    baseline_counts: ArrayLike,
    baseline_sums: ArrayLike,
    target_counts: ArrayLike,
    target_sums: ArrayLike,
) -> float | None:
    """Wasserstein-1 distance between two binned samples, each bin collapsed to its mean.

    Exact (equal to ``scipy.stats.wasserstein_distance`` on the raw values) when every bin holds
    a single distinct value; otherwise the error is at most the sum of both samples' mean
    absolute deviations from their bin means. ``None`` when either side has no values.
    """
    cb = np.asarray(baseline_counts, dtype=np.float64)
    ct = np.asarray(target_counts, dtype=np.float64)
    if cb.sum() <= 0 or ct.sum() <= 0:
        return None
    sb, st = np.asarray(baseline_sums, dtype=np.float64), np.asarray(target_sums, dtype=np.float64)
    ib, it = cb > 0, ct > 0
    return float(stats.wasserstein_distance(sb[ib] / cb[ib], st[it] / ct[it], cb[ib], ct[it]))


def missing_rate_test(
    baseline_missing: int, baseline_rows: int, target_missing: int, target_rows: int
) -> float | None:
    """Two-sided p-value that both samples share one missing-value rate.

    Fisher's exact test on the 2 x 2 table (missing / present by baseline / target), two-sided
    by doubling the smaller tail. ``None`` for an empty side.
    """
    if baseline_rows <= 0 or target_rows <= 0:
        return None
    total = baseline_rows + target_rows
    missing = baseline_missing + target_missing
    if missing == 0 or missing == total:
        return 1.0
    upper = float(stats.hypergeom.sf(target_missing - 1, total, missing, target_rows))
    lower = float(stats.hypergeom.cdf(target_missing, total, missing, target_rows))
    return float(min(1.0, 2.0 * min(upper, lower)))
