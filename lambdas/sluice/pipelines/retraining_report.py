"""The champion/challenger comparison of a retraining run: its figures and a self-contained HTML report.

Both models are scored on the same holdout rows; the report goes with the candidate into the
registry (``reports/comparison.html``) for the person who approves it.
"""

from __future__ import annotations

import io
from typing import Any

PRIMARY_METRIC = {"classification": "f1", "regression": "rmse"}
LOWER_IS_BETTER = {"rmse", "mae"}


def compare(parent: dict[str, float], candidate: dict[str, float], *, task: str) -> dict[str, Any]:
    """Champion/challenger figures on one holdout, and which one the primary metric favours."""
    primary = PRIMARY_METRIC[task]
    better = None
    if primary in parent and primary in candidate:
        delta = candidate[primary] - parent[primary]
        better = delta < 0 if primary in LOWER_IS_BETTER else delta > 0
    return {
        "primary_metric": primary,
        "champion": parent,
        "challenger": candidate,
        "delta": {k: candidate[k] - parent[k] for k in parent if k in candidate},
        "challenger_better": better,
    }


def render_comparison_html(comparison: dict[str, Any]) -> str:
    """A self-contained champion/challenger report: a metric table and a grouped bar chart."""
    import base64
    import html

    names = sorted(comparison["challenger"])
    png = _bar_chart(comparison, names)

    def cell(value: float | None, fmt: str = ".4f") -> str:
        return "n/a" if value is None else format(value, fmt)

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{cell(comparison['champion'].get(n))}</td>"
        f"<td>{cell(comparison['challenger'][n])}</td><td>{cell(comparison['delta'].get(n), '+.4f')}</td></tr>"
        for n in names
    )
    parent = comparison.get("parent_version")
    title = (
        f"{comparison.get('model', '')}: champion v{parent} vs challenger"
        if parent is not None
        else f"{comparison.get('model', '')}: first version (no champion yet)"
    )
    verdict = {True: "better", False: "not better", None: "not comparable"}[comparison["challenger_better"]]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p>Run {html.escape(str(comparison.get('run_id', '')))}, "
        f"{comparison.get('holdout_rows', '?')} holdout rows. On {html.escape(comparison['primary_metric'])} "
        f"the challenger is <b>{verdict}</b>. It is registered as PendingManualApproval: nothing is deployed.</p>"
        "<table border='1' cellpadding='4'><tr><th>metric</th><th>champion</th><th>challenger</th>"
        f"<th>delta</th></tr>{rows}</table>"
        f"<img alt='metrics' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        "</body></html>"
    )


def _bar_chart(comparison: dict[str, Any], names: list[str]) -> bytes:
    """PNG of the champion's and the challenger's value of each metric, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    champion = [comparison["champion"].get(n, float("nan")) for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    positions = range(len(names))
    ax.bar([p - 0.2 for p in positions], champion, 0.4, label="champion")
    ax.bar(
        [p + 0.2 for p in positions], [comparison["challenger"][n] for n in names], 0.4, label="challenger"
    )
    ax.set_xticks(list(positions), names)
    ax.set_title("Holdout metrics, same rows")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
