"""Self-contained HTML drift report: a summary table and one baseline-vs-target plot per feature.

The page has no external resources (plots are inline base64 PNGs drawn with matplotlib's Agg
renderer, without pyplot's global state), so it can be stored in S3 and opened anywhere.
Baseline and target are told apart everywhere by name, colour and hatching: baseline bars are
solid blue, target bars are hatched orange, and every legend and heading names each side's label
and row count. Bin edges read as short numbers (``23.3k``, ``0.25``) and the legend sits above the
bars, never on them.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sluice.monitoring.report import DriftReport, FeatureDrift

BASELINE_STYLE: dict[str, Any] = {"color": "#1f77b4", "edgecolor": "#1f77b4"}
TARGET_STYLE: dict[str, Any] = {"color": "#ff7f0e", "edgecolor": "#a04a00", "hatch": "///", "alpha": 0.85}


def side_legend(report: DriftReport) -> tuple[str, str]:
    """Legend texts for the two sides, e.g. ``baseline: training v3 (120,000 rows)``."""
    return (
        f"baseline: {report.baseline.label} ({report.baseline.n_rows:,} rows)",
        f"target: {report.target.label} ({report.target.n_rows:,} rows)",
    )


_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_UNITS = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"), (1.0, ""))


def readable_number(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits and a k/M/B/T suffix: ``12345.6`` -> ``12.3k``.

    Digits left of the point are never dropped (``123456`` -> ``123k``, ``123.4`` -> ``123``), and
    a value that rounds up to the next unit takes it (``999,999`` -> ``1M``).
    """
    if not math.isfinite(value) or value == 0:
        return "0" if value == 0 else str(value)
    if abs(value) < 1e-3:
        return f"{value:.{digits}g}"
    index = next((i for i, (scale, _) in enumerate(_UNITS) if abs(value) >= scale), len(_UNITS) - 1)
    rounded = float(f"{value / _UNITS[index][0]:.{digits}g}")
    if abs(rounded) >= 1000 and index > 0:
        index -= 1
        rounded = float(f"{value / _UNITS[index][0]:.{digits}g}")
    shown = f"{rounded:.{max(digits, len(str(int(abs(rounded)))))}g}"
    return shown + _UNITS[index][1]


def readable_bin_labels(labels: Sequence[str]) -> list[str]:
    """Numeric bin labels with their edges shortened: ``[2.332e+04, 3.057e+04)`` -> ``[23.3k, 30.6k)``.

    Uses the fewest significant digits (3 to 6) that keep distinct edges distinct, so two bins
    never read the same. Text that is not a number (``<``, ``=``, brackets) is kept.
    """
    values = {float(m) for label in labels for m in _NUMBER.findall(label)}
    digits = next((d for d in range(3, 7) if len({readable_number(v, d) for v in values}) == len(values)), 6)
    return [_NUMBER.sub(lambda m: readable_number(float(m.group()), digits), label) for label in labels]


def plot_feature(report: DriftReport, feature: FeatureDrift) -> Figure:
    """Grouped bars of the baseline and target proportions per bin (or category).

    Bins empty on both sides are left out. The first bar container is the baseline, the second
    the target; each is labelled with its side. Numeric bins are labelled with readable numbers
    (:func:`readable_bin_labels`); the legend sits above the plot, outside the bars.
    """
    baseline = np.asarray(feature.baseline_hist, dtype=float)
    target = np.asarray(feature.target_hist, dtype=float)
    keep = (baseline > 0) | (target > 0)
    if not keep.any():
        keep[:] = True
    labels = tick_labels(feature)
    labels = [label for label, k in zip(labels, keep, strict=True) if k]
    x = np.arange(len(labels))
    width = 0.4
    fig = Figure(figsize=(7.0, 3.4), dpi=90, layout="constrained")
    ax = fig.add_subplot()
    base_label, target_label = side_legend(report)
    ax.bar(x - width / 2, baseline[keep], width, label=base_label, **BASELINE_STYLE)
    ax.bar(x + width / 2, target[keep], width, label=target_label, **TARGET_STYLE)
    ax.set_xticks(
        x, labels, rotation=45 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center"
    )
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylabel("share of non-missing values")
    status = "DRIFT" if feature.drifted else "no drift"
    fig.suptitle(f"{feature.name} ({feature.kind}): {status}", fontsize=10)
    # Above the axes, not on them: "best" still lands on bars when every spot holds one.
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.01), frameon=False, borderaxespad=0.0)
    ax.grid(axis="y", alpha=0.3)
    return fig


def tick_labels(feature: FeatureDrift) -> list[str]:
    """The x labels of a feature's plot: readable numbers for numeric bins, categories as they are."""
    if feature.kind == "numeric":
        return readable_bin_labels(feature.bin_labels)
    return list(feature.bin_labels)


def _png_base64(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "&ndash;"
    return f"{value:.{digits}g}"


def _rate(value: float | None) -> str:
    return "&ndash;" if value is None else f"{100 * value:.1f}%"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f3f3f3; }
td.name, th.name { text-align: left; }
tr.drift td { background: #fde8e8; }
.alarm { color: #b00020; font-weight: bold; }
.ok { color: #1b7a1b; font-weight: bold; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; vertical-align: middle; margin-right: 0.3em; }
.baseline { background: #1f77b4; }
.target { background: repeating-linear-gradient(45deg, #ff7f0e 0 3px, #a04a00 3px 4px); }
figure { margin: 1.5rem 0; }
figcaption { font-size: 0.8rem; color: #555; }
"""


def _summary_row(f: FeatureDrift, anchor: str) -> str:
    esc = html.escape
    reasons = ", ".join(f.reasons) if f.reasons else ("" if f.verdict == "not significant" else f.verdict)
    return (
        f'<tr class="{"drift" if f.drifted else ""}">'
        f'<td class="name"><a href="#{anchor}">{esc(f.name)}</a></td>'
        f"<td>{f.kind}</td><td>{f.test}</td><td>{_num(f.statistic)}</td><td>{_num(f.p_value)}</td>"
        f"<td>{_num(f.psi)}</td><td>{_num(f.js_distance)}</td><td>{_num(f.wasserstein)}</td>"
        f"<td>{_rate(f.baseline_missing_rate)}</td><td>{_rate(f.target_missing_rate)}</td>"
        f'<td>{"yes" if f.drifted else "no"}</td><td class="name">{esc(reasons)}</td>'
        f'<td class="name">{esc(f.note or "")}</td></tr>'
    )


def _figure(report: DriftReport, f: FeatureDrift, anchor: str) -> str:
    esc = html.escape
    base_label, target_label = side_legend(report)
    caption = (
        f"{esc(f.name)}: baseline = {esc(report.baseline.label)}, target = {esc(report.target.label)}; "
        f"{f.n_baseline:,} baseline and {f.n_target:,} target non-missing values."
    )
    return (
        f'<figure id="{anchor}"><img alt="{esc(f.name)}: {esc(base_label)} vs {esc(target_label)}" '
        f'src="data:image/png;base64,{_png_base64(plot_feature(report, f))}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _header(report: DriftReport) -> str:
    """Verdict, the two sides and the policy, above the table."""
    esc = html.escape
    policy = report.policy
    verdict = (
        '<span class="alarm">DATASET DRIFT</span>'
        if report.dataset_drift
        else '<span class="ok">no dataset drift</span>'
    )
    tolerances = "".join(
        f"<li>{esc(name)}: PSI tolerance {value:g}</li>"
        for name, value in policy.feature_psi_tolerance.items()
    )
    return f"""<p>{verdict}: {report.n_drifted} of {len(report.features)} features drift
(dataset drift share {report.dataset_drift_share:.3f}, alarm above {policy.share_tolerance:g}).</p>
<ul>
<li><span class="swatch baseline"></span><strong>Baseline</strong> (reference the profile was fitted on):
{esc(report.baseline.label)}, {report.baseline.n_rows:,} rows, profile {esc(report.profile_fingerprint)}</li>
<li><span class="swatch target"></span><strong>Target</strong> (window compared against it):
{esc(report.target.label)}, {report.target.n_rows:,} rows</li>
</ul>
<p>A feature drifts when its test p-value is below {report.alpha_per_test:.3g}
(alpha {policy.alpha:g}, {esc(policy.correction)} correction) and its PSI exceeds {policy.psi_tolerance:g},
or when its missing rate moved by more than {policy.missing_tolerance:g} with a p-value below the same level.</p>
{f"<ul>{tolerances}</ul>" if tolerances else ""}"""


def _performance(estimated: Mapping[str, Any] | None, registered: Mapping[str, float]) -> str:
    """Estimated (from the served probabilities, no labels) against registered (holdout) metrics."""
    if not estimated:
        return ""
    cells = []
    for key, label in (("f1", "F1"), ("accuracy", "accuracy"), ("roc_auc", "AUC")):
        value = estimated.get(key)
        if value is None:
            continue
        before = registered.get(key)
        shown = "" if before is None else f"{before:.3f}"
        change = "" if before is None else f"{value - before:+.3f}"
        cells.append(f"<tr><td class='name'>{label}</td><td>{value:.3f}</td><td>{shown}</td><td>{change}</td></tr>")
    return f"""<h2>Performance before labels</h2>
<p>Expected from the {estimated.get("rows", 0)} served probabilities of this window (calibrated at
registration; valid while the concept holds), beside the metrics registered on the holdout. The
labelled quality check measures the realised values once labels arrive.</p>
<table><thead><tr><th class="name">metric</th><th>estimated</th><th>registered</th><th>change</th></tr></thead>
<tbody>{"".join(cells)}</tbody></table>"""


def render_html(
    report: DriftReport,
    *,
    title: str = "Sluice drift report",
    estimated: Mapping[str, Any] | None = None,
    registered: Mapping[str, float] | None = None,
) -> str:
    """The report as one self-contained HTML page (inline PNG plots, no external resources).

    ``estimated`` (an :class:`~sluice.monitoring.estimation.Estimate` as a dict) adds a table of
    performance expected without labels, beside the ``registered`` metrics.
    """
    esc = html.escape
    ordered = sorted(report.features, key=lambda f: not f.drifted)
    anchors = {f.name: f"feature-{i}" for i, f in enumerate(ordered)}  # names may hold spaces
    rows = [_summary_row(f, anchors[f.name]) for f in ordered]
    figures = [_figure(report, f, anchors[f.name]) for f in ordered]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
{_header(report)}
{_performance(estimated, registered or {})}
<table>
<thead><tr><th class="name">feature</th><th>kind</th><th>test</th><th>statistic</th><th>p-value</th>
<th>PSI</th><th>JS distance</th><th>Wasserstein</th><th>baseline missing</th><th>target missing</th>
<th>drift</th><th class="name">reasons</th><th class="name">note</th></tr></thead>
<tbody>
{"".join(rows)}
</tbody></table>
<h2>Baseline vs target per feature</h2>
{"".join(figures)}
</body></html>
"""


def save_report(report: DriftReport, path: str | Path, *, title: str = "Sluice drift report") -> Path:
    """Write ``render_html(report)`` to ``path`` (parent folders are created) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(report, title=title), encoding="utf-8")
    return target
