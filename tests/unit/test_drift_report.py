"""The HTML drift report: self-contained, one plot per feature, baseline and target never swapped."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer

from sluice.monitoring.profile import DriftProfile
from sluice.monitoring.report import DriftReport
from sluice.monitoring.report_html import (
    plot_feature,
    readable_bin_labels,
    readable_number,
    render_html,
    save_report,
    side_legend,
    tick_labels,
)

RNG = np.random.default_rng(42)
BASELINE = pd.DataFrame(
    {
        "low": RNG.uniform(0, 1, size=4_000),
        "colour": RNG.choice(["red", "green", "blue"], p=[0.7, 0.2, 0.1], size=4_000),
        "steady": RNG.normal(size=4_000),
    }
)
# The target moves "low" to the top of its range and makes "blue" the most common colour.
TARGET = pd.DataFrame(
    {
        "low": RNG.uniform(0.8, 1.2, size=600),
        "colour": RNG.choice(["red", "green", "blue"], p=[0.1, 0.2, 0.7], size=600),
        "steady": RNG.normal(size=600),
    }
)


@pytest.fixture(scope="module")
def report() -> DriftReport:
    profile = DriftProfile(n_bins=10).fit(BASELINE)
    return profile.compare(TARGET, label="prod window 10:00", baseline_label="training v3")


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def _bars(fig) -> tuple[BarContainer, BarContainer]:
    ax = fig.axes[0]
    containers = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(containers) == 2
    return containers[0], containers[1]


def test_html_is_self_contained_with_one_png_per_feature(report):
    html = render_html(report)
    assert html.startswith("<!DOCTYPE html>")
    images = _images(html)
    assert len(images) == len(report.features) == 3
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    assert html.count("<figure") == 3
    # nothing is fetched from elsewhere: no scripts, stylesheets, fonts or remote images
    assert not re.search(r"https?://", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', html))


def test_html_names_both_sides_with_their_row_counts(report):
    html = render_html(report)
    assert "training v3" in html and "prod window 10:00" in html
    assert "4,000 rows" in html and "600 rows" in html
    baseline_legend, target_legend = side_legend(report)
    assert baseline_legend == "baseline: training v3 (4,000 rows)"
    assert target_legend == "target: prod window 10:00 (600 rows)"
    # the drifting features come first in the table and the figures, and are flagged
    assert "DATASET DRIFT" in html
    assert html.index('alt="low') < html.index('alt="steady')
    assert html.index('alt="colour') < html.index('alt="steady')


@pytest.mark.parametrize("name", ["low", "colour", "steady"])
def test_plot_bars_are_the_report_histograms_with_the_right_labels(report, name):
    feature = report[name]
    baseline_bars, target_bars = _bars(plot_feature(report, feature))
    baseline_legend, target_legend = side_legend(report)
    assert baseline_bars.get_label() == baseline_legend
    assert target_bars.get_label() == target_legend
    keep = (np.asarray(feature.baseline_hist) > 0) | (np.asarray(feature.target_hist) > 0)
    np.testing.assert_allclose(
        [b.get_height() for b in baseline_bars], np.asarray(feature.baseline_hist)[keep]
    )
    np.testing.assert_allclose([b.get_height() for b in target_bars], np.asarray(feature.target_hist)[keep])
    ax = plot_feature(report, feature).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        label for label, k in zip(tick_labels(feature), keep, strict=True) if k
    ]
    # the legend shows the sides in the same order as the bars
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [baseline_legend, target_legend]


def test_the_plotted_baseline_is_the_baseline_data_not_the_target(report):
    # Guards against the swapped-histogram bug: recompute both sides from the raw frames.
    feature = report["colour"]
    baseline_bars, target_bars = _bars(plot_feature(report, feature))
    labels = list(feature.bin_labels)
    heights_b = dict(zip(labels, (b.get_height() for b in baseline_bars), strict=False))
    heights_t = dict(zip(labels, (b.get_height() for b in target_bars), strict=False))
    for colour in ("red", "green", "blue"):
        assert heights_b[colour] == pytest.approx((BASELINE.colour == colour).mean())
        assert heights_t[colour] == pytest.approx((TARGET.colour == colour).mean())
    assert heights_b["red"] > 0.6 and heights_t["blue"] > 0.6

    low = report["low"]
    baseline_bars, target_bars = _bars(plot_feature(report, low))
    # baseline uniform on [0, 1): ten equal quantile bins; target piles into the top bin
    assert [b.get_height() for b in baseline_bars] == pytest.approx([0.1] * 10, abs=1e-3)
    assert target_bars[-1].get_height() == pytest.approx((TARGET.low >= 0.9).mean(), abs=0.02)
    assert target_bars[-1].get_height() > 0.7


def test_baseline_and_target_bars_are_told_apart_by_style(report):
    baseline_bars, target_bars = _bars(plot_feature(report, report["steady"]))
    assert baseline_bars[0].get_hatch() in (None, "")
    assert target_bars[0].get_hatch() == "///"
    assert baseline_bars[0].get_facecolor() != target_bars[0].get_facecolor()
    # baseline on the left of each pair
    assert all(b.get_x() < t.get_x() for b, t in zip(baseline_bars, target_bars, strict=True))


def test_report_rebuilt_from_json_renders_the_same_page(report):
    again = DriftReport.from_dict(report.to_dict())
    assert render_html(again) == render_html(report)


def test_empty_window_renders_with_empty_target_bars():
    profile = DriftProfile(n_bins=5).fit(BASELINE)
    report = profile.compare(BASELINE.iloc[:0])
    html = render_html(report)
    assert len(_images(html)) == 3
    assert "empty target window" in html and "no dataset drift" in html
    _, target_bars = _bars(plot_feature(report, report["low"]))
    assert all(b.get_height() == 0 for b in target_bars)


def test_all_missing_feature_and_one_row_window_render():
    frame = pd.DataFrame({"gone": np.full(50, np.nan), "x": np.arange(50.0)})
    profile = DriftProfile().fit(frame)
    report = profile.compare(frame.iloc[[3]])
    html = render_html(report)
    assert len(_images(html)) == 2
    assert "baseline has no non-missing values" in html
    baseline_bars, target_bars = _bars(plot_feature(report, report["gone"]))
    assert [b.get_height() for b in baseline_bars] == [0.0]  # the one "all values" bin, empty
    assert [b.get_height() for b in target_bars] == [0.0]


def test_profile_without_features_renders_a_page_without_plots():
    report = DriftProfile().fit(pd.DataFrame(index=range(3))).compare(pd.DataFrame(index=range(2)))
    html = render_html(report)
    assert "0 of 0 features drift" in html and _images(html) == []


def test_names_and_labels_are_html_escaped(tmp_path):
    frame = pd.DataFrame({"<b>x</b> & y": np.arange(100.0)})
    report = DriftProfile().fit(frame).compare(frame, label='<script>alert("t")</script>')
    html = render_html(report, title="drift <check>")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in html
    assert "<title>drift &lt;check&gt;</title>" in html
    path = save_report(report, tmp_path / "nested" / "report.html", title="drift <check>")
    assert path.read_text(encoding="utf-8") == html


def test_feature_psi_tolerances_are_listed():
    from sluice.monitoring.policy import DriftPolicy

    frame = pd.DataFrame({"x": np.arange(100.0)})
    report = DriftProfile().fit(frame).compare(frame, policy=DriftPolicy(feature_psi_tolerance={"x": 0.25}))
    assert "x: PSI tolerance 0.25" in render_html(report)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (12_345.6, "12.3k"),
        (0.25, "0.25"),
        (123_456, "123k"),
        (123.4, "123"),
        (999_999, "1M"),
        (2_500_000, "2.5M"),
        (0.30000000000000004, "0.3"),
        (-23_320, "-23.3k"),
        (0, "0"),
        (7, "7"),
    ],
)
def test_readable_number(value, shown):
    assert readable_number(value) == shown


def test_bin_labels_are_short_numbers_that_stay_distinct():
    # Given labels as the drift job writes them (4 significant digits) or as older reports held them
    labels = ["< 2.332e+04", "[2.332e+04, 3.057e+04)", "[0.30000000000000004, 0.7)", ">= 8.709e+04"]
    assert readable_bin_labels(labels) == ["< 23.3k", "[23.3k, 30.6k)", "[0.3, 0.7)", ">= 87.1k"]
    # Edges that 3 digits would merge get a fourth, so no two bins read the same
    assert readable_bin_labels(["< 23310", "[23310, 23340)", ">= 23340"]) == [
        "< 23.31k",
        "[23.31k, 23.34k)",
        ">= 23.34k",
    ]
    # Text around the numbers is kept: atoms, open intervals, negatives, the empty profile's bin
    assert readable_bin_labels(["= 0", "(0, 1)", "[-1.5, -0.25)", "all values"]) == [
        "= 0",
        "(0, 1)",
        "[-1.5, -0.25)",
        "all values",
    ]


def test_plotted_bin_labels_of_large_and_fractional_numerics_are_readable():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"income": rng.normal(55_000, 15_000, 2_000), "ratio": rng.beta(2, 3, 2_000)})
    report = DriftProfile(n_bins=20).fit(frame).compare(frame.sample(300, random_state=0))
    for name, unit in (("income", "k"), ("ratio", "")):
        texts = [t.get_text() for t in plot_feature(report, report[name]).axes[0].get_xticklabels()]
        assert len(set(texts)) == len(texts) > 10
        numbers = [n for text in texts for n in re.findall(r"[\d.]+[kMBT]?", text)]
        assert all("e" not in text for text in texts)
        # at most 4 significant digits, and the unit where the values are in the thousands
        assert all(len(n.rstrip("kMBT").replace(".", "").lstrip("0")) <= 4 for n in numbers)
        assert all(n[-1] == unit if unit else n[-1].isdigit() for n in numbers)


@pytest.mark.parametrize("name", ["low", "colour", "steady"])
def test_the_legend_covers_no_bar(report, name):
    fig = plot_feature(report, report[name])
    fig.draw_without_rendering()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    bars = [bar.get_window_extent() for container in _bars(fig) for bar in container]
    assert bars and not any(legend.overlaps(bar) for bar in bars)
    # nor the plotting area at all, and it stays on the figure
    assert legend.y0 >= ax.get_window_extent().y1
    assert fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(legend.x1, legend.y1)
