"""``sluice monitor --out FILE`` writes exactly FILE, one section per version."""

from __future__ import annotations

from rich.console import Console

from sluice.cli import monitor


def test_out_writes_exactly_the_named_file_with_every_version(tmp_path, monkeypatch):
    # Given reports of two served versions
    monkeypatch.setattr(
        "sluice.monitoring.report_html.render_html",
        lambda report, *, title: (
            f"<html><head><title>{title}</title></head><body><h1>{report}</h1></body></html>"
        ),
    )
    out = tmp_path / "x.html"
    # When they are saved with --out x.html
    monitor._save({2: "two", 1: "one"}, model="m", out=str(out), open_=False, console=Console(file=None))
    # Then x.html is the only file, holding both sections in version order under one head
    assert [p.name for p in tmp_path.iterdir()] == ["x.html"]
    page = out.read_text()
    assert page.count("<html>") == 1 and page.index("<h1>one</h1>") < page.index("<h1>two</h1>")
    assert page.endswith("</body></html>")


def test_one_version_is_written_as_rendered(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "sluice.monitoring.report_html.render_html", lambda report, *, title: f"<p>{title}</p>"
    )
    out = tmp_path / "drift.html"
    monitor._save({3: "r"}, model="m", out=str(out), open_=False, console=Console(file=None))
    assert out.read_text() == "<p>Sluice drift report: m v3</p>"
