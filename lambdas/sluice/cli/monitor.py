"""``sluice monitor``: run the drift check on demand, show the latest reports, check live quality.

Reads ``SLUICE_REGISTRY_TABLE``, ``SLUICE_REGISTRY_BUCKET``, ``SLUICE_CAPTURE_BUCKET`` (and
``SLUICE_REPORTS_BUCKET`` if reports live elsewhere). User errors exit 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import re
import webbrowser
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sluice.cli.refs import ModelRef, model_ref
from sluice.errors import SluiceError
from sluice.settings import Settings

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_MINUTES = {"s": 1 / 60, "m": 1.0, "": 1.0, "h": 60.0, "d": 1440.0}


def parse_window(text: str) -> float:
    """``"60m"``, ``"2h"``, ``"1d"``, ``"90"`` (minutes) → minutes."""
    match = _WINDOW.match(text or "")
    if not match or float(match.group(1)) <= 0:
        raise SluiceError(f"--window must look like 60m, 2h or 1d; got {text!r}")
    return float(match.group(1)) * _UNIT_MINUTES[match.group(2)]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("monitor", help="drift and live-quality monitoring of served models")
    commands = parser.add_subparsers(dest="monitor_command", required=True, metavar="SUBCOMMAND")

    run = commands.add_parser(
        "run", help="compare the captured window of each served version with its baseline"
    )
    _common(run)
    run.add_argument(
        "--window", default="60m", help="captured data to compare, e.g. 60m, 6h, 1d (default 60m)"
    )
    run.add_argument("--no-publish", action="store_true", help="do not send CloudWatch metrics")
    run.add_argument("--no-store", action="store_true", help="do not write the reports to S3")
    run.set_defaults(func=cmd_run)

    report = commands.add_parser("report", help="the latest stored drift report of each version")
    _common(report)
    report.set_defaults(func=cmd_report)

    quality = commands.add_parser(
        "quality", help="live metrics on labelled predictions vs the registered ones"
    )
    quality.add_argument(
        "--model", required=True, type=model_ref, help="NAME (every served version) or NAME:VERSION"
    )
    quality.add_argument("--version", type=int, action="append", help=argparse.SUPPRESS)  # older form
    quality.add_argument(
        "--window", default="1d", help="captured predictions to join with labels (default 1d)"
    )
    quality.add_argument("--min-labels", type=int, default=30, help="labelled rows needed for metrics")
    quality.add_argument("--no-publish", action="store_true", help="do not send CloudWatch metrics")
    quality.add_argument("--json", action="store_true", help="print JSON instead of a table")
    quality.set_defaults(func=cmd_quality)

    labels = commands.add_parser("labels", help="upload ground-truth labels (CSV or JSON lines)")
    labels.add_argument("--model", required=True, type=model_ref, help="registered model name")
    labels.add_argument(
        "file", help="CSV with request_id,label[,row] or JSON lines {request_id, label, row?}"
    )
    labels.set_defaults(func=cmd_labels)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, type=model_ref, help="NAME (every served version) or NAME:VERSION"
    )
    parser.add_argument("--version", type=int, action="append", help=argparse.SUPPRESS)  # older form
    parser.add_argument(
        "--out",
        help="write the HTML report to exactly this file (several versions: one file, one section each)",
    )
    parser.add_argument("--open", action="store_true", help="open the HTML report in a browser")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _out_path(out: str | None, *, open_: bool, model: str) -> Path | None:
    if not out and not open_:
        return None
    return Path(out) if out else Path.cwd() / f"sluice-drift-{model}.html"


def _save(reports: dict[int, Any], *, model: str, out: str | None, open_: bool, console: Console) -> None:
    """Write the reports to exactly ``out`` (one file; several versions: one section each)."""
    from sluice.monitoring.report_html import render_html

    path = _out_path(out, open_=open_, model=model)
    if path is None or not reports:
        return
    documents = [render_html(reports[v], title=f"Sluice drift report: {model} v{v}") for v in sorted(reports)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_one_document(documents), encoding="utf-8")
    console.print(f"HTML report: {path}")
    if open_:
        webbrowser.open(path.resolve().as_uri())


def _one_document(documents: list[str]) -> str:
    """Several HTML reports as one page: the first one's head, then every report's body."""
    if len(documents) == 1:
        return documents[0]
    bodies = []
    for document in documents:
        start, end = document.find("<body"), document.rfind("</body>")
        if start < 0 or end < 0:
            bodies.append(document)
            continue
        bodies.append(document[document.index(">", start) + 1 : end])
    first = documents[0]
    head = first[: first.index(">", first.find("<body")) + 1] if "<body" in first else ""
    return head + "<hr>".join(bodies) + ("</body></html>" if head else "")


def _versions(args: argparse.Namespace, settings: Settings) -> list[int] | None:
    """``--model NAME:VERSION`` (or the older ``--version``, repeatable); ``None``: every served one."""
    ref: ModelRef = args.model
    args.model = ref.name
    versions = list(args.version or [])
    if ref.pinned:
        from sluice.registry.store import ModelRegistry

        registry = ModelRegistry.from_settings(settings) if ref.alias else None
        versions.append(ref.require_version(registry))
    return sorted(set(versions)) or None


def _table(model: str, version: int, window: str, report: Any) -> Table:
    verdict = "[red]DATASET DRIFT[/red]" if report.dataset_drift else "[green]no dataset drift[/green]"
    table = Table(
        title=f"{model} v{version}  {window}  rows {report.target.n_rows:,}  {verdict}  "
        f"share {report.dataset_drift_share:.2f}",
        title_justify="left",
    )
    for column in ("feature", "kind", "test", "p-value", "PSI", "JS", "missing", "drift"):
        table.add_column(column, justify="left" if column in ("feature", "kind", "test") else "right")

    def num(value: float | None, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}g}"

    for f in sorted(report.features, key=lambda f: (not f.drifted, -(f.psi or 0.0))):
        table.add_row(
            f.name,
            f.kind,
            f.test,
            num(f.p_value),
            num(f.psi),
            num(f.js_distance),
            "-" if f.target_missing_rate is None else f"{f.target_missing_rate:.1%}",
            "[red]yes[/red]" if f.drifted else "no",
        )
    return table


def cmd_run(args: argparse.Namespace) -> int:
    from sluice.monitoring.drift_job import drift_runs

    minutes = parse_window(args.window)
    console = Console()
    settings = Settings.from_env()
    versions = _versions(args, settings)
    runs = drift_runs(
        settings,
        model=args.model,
        versions=versions,
        window_minutes=minutes,
        publish_metrics=not args.no_publish,
        write_reports=not args.no_store,
    )
    if args.json:
        print(json.dumps([{**run.summary(), "report": run.report.to_dict()} for run in runs]))
    else:
        for run in runs:
            window = f"{run.start:%Y-%m-%d %H:%M} to {run.end:%H:%M} UTC"
            console.print(_table(run.model, run.version, window, run.report))
            if run.html_key:
                console.print(f"stored: {run.json_key}, {run.html_key}")
    _save(
        {run.version: run.report for run in runs},
        model=args.model,
        out=args.out,
        open_=args.open,
        console=console,
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sluice.monitoring.report import DriftReport
    from sluice.monitoring.report_store import latest_reports

    settings = Settings.from_env()
    documents = []
    served: list[int | None] = [None]  # the latest of every served version
    chosen = _versions(args, settings) or served
    for version in chosen:
        documents += latest_reports(settings, model=args.model, version=version)
    console = Console()
    reports = {d["version"]: DriftReport.from_dict(d["report"]) for d in documents}
    if args.json:
        print(json.dumps(documents))
    else:
        for document in documents:
            window = f"{document['window']['start']} to {document['window']['end']}"
            console.print(_table(args.model, document["version"], window, reports[document["version"]]))
            console.print(f"stored: {document['key']}")
    _save(reports, model=args.model, out=args.out, open_=args.open, console=console)
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from sluice.monitoring.quality import run_concept_check

    settings = Settings.from_env()
    versions = _versions(args, settings)
    results = run_concept_check(
        settings,
        model=args.model,
        versions=versions,
        window_minutes=parse_window(args.window),
        min_labels=args.min_labels,
        publish_metrics=not args.no_publish,
    )
    if args.json:
        print(json.dumps([r.to_dict() for r in results]))
        return 0
    table = Table(title=f"{args.model}: live quality on labelled predictions", title_justify="left")
    for column in ("version", "labelled rows", "metric", "live", "registered", "delta"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for result in results:
        if not result.metrics:
            table.add_row(
                str(result.version), f"{result.labelled_rows:,}", f"(needs {args.min_labels})", "-", "-", "-"
            )
        for name, value in result.metrics.items():
            registered = result.registered.get(name)
            delta = result.deltas.get(name)
            table.add_row(
                str(result.version),
                f"{result.labelled_rows:,}",
                name,
                f"{value:.3f}",
                "-" if registered is None else f"{registered:.3f}",
                "-" if delta is None else f"{delta:+.3f}",
            )
    Console().print(table)
    return 0


def cmd_labels(args: argparse.Namespace) -> int:
    from sluice.monitoring.labels import ingest_labels, parse_label_file

    args.model = args.model.name
    path = Path(args.file)
    if not path.is_file():
        raise SluiceError(f"label file {args.file!r} does not exist")
    named, labels = parse_label_file(path.read_bytes(), key=path.name)
    if named is not None and named != args.model:
        raise SluiceError(f"label file {path.name} is for model {named!r}, not {args.model!r}")
    count = ingest_labels(Settings.from_env(), model=args.model, labels=labels)
    print(f"stored {count} label(s) for {args.model}")
    return 0
