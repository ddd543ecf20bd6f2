"""Stored drift reports: ``reports/drift/<model>/<version>/<end>.json|.html`` in the reports bucket.

The JSON document holds the window and the report (``DriftReport.to_dict``); the HTML page is
:func:`sluice.monitoring.report_html.render_html` of it. The reports bucket is
``SLUICE_REPORTS_BUCKET``, or the capture bucket when that is not set.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sluice import aws
from sluice.errors import NotFound, SluiceError
from sluice.serving.capture import format_ts
from sluice.settings import Settings

if TYPE_CHECKING:
    from sluice.monitoring.drift_job import DriftRun

REPORTS_PREFIX = "reports/drift"


def reports_bucket(settings: Settings) -> str:
    bucket = settings.reports_bucket or settings.capture_bucket
    if not bucket:
        raise SluiceError("missing setting(s): SLUICE_REPORTS_BUCKET or SLUICE_CAPTURE_BUCKET")
    return bucket


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def report_key(model: str, version: int, end: datetime, suffix: str) -> str:
    return f"{REPORTS_PREFIX}/{model}/{int(version)}/{_stamp(end)}.{suffix}"


def write_report(settings: Settings, run: DriftRun, *, html: bool = True) -> None:
    """Store the run's JSON report (with its window) and, if ``html``, the rendered HTML report."""
    bucket = reports_bucket(settings)
    client = aws.client("s3")
    estimated = None if run.estimate is None else run.estimate.to_dict()
    document = {
        "model": run.model,
        "version": run.version,
        "window": {"start": format_ts(run.start), "end": format_ts(run.end)},
        "report": run.report.to_dict(),
        "estimated": estimated,
        "registered": run.registered,
    }
    run.json_key = report_key(run.model, run.version, run.end, "json")
    client.put_object(
        Bucket=bucket,
        Key=run.json_key,
        Body=json.dumps(document).encode(),
        ContentType="application/json",
    )
    if html:
        from sluice.monitoring.report_html import render_html

        run.html_key = report_key(run.model, run.version, run.end, "html")
        page = render_html(
            run.report,
            title=f"Sluice drift report: {run.model} v{run.version}",
            estimated=estimated,
            registered=run.registered,
        )
        client.put_object(
            Bucket=bucket, Key=run.html_key, Body=page.encode(), ContentType="text/html; charset=utf-8"
        )


def latest_reports(settings: Settings, *, model: str, version: int | None = None) -> list[dict[str, Any]]:
    """The newest stored JSON report of each version of ``model`` (or of ``version``)."""
    bucket = reports_bucket(settings)
    client = aws.client("s3")
    prefix = f"{REPORTS_PREFIX}/{model}/" + (f"{int(version)}/" if version is not None else "")
    newest: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            if not key.endswith(".json"):
                continue
            folder = key.rsplit("/", 1)[0]
            if key > newest.get(folder, ""):
                newest[folder] = key
    if not newest:
        which = f"model {model!r}" + (f" version {version}" if version is not None else "")
        raise NotFound(f"no drift report stored for {which} (run `sluice monitor run --model {model}`)")
    documents = []
    for key in sorted(newest.values()):
        document = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        document["key"] = key
        documents.append(document)
    return sorted(documents, key=lambda d: d["version"])
