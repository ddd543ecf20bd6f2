"""``sluice batch run``: batch-score a CSV or Parquet file with a registered model.

By default it starts the stage's batch pipeline (Step Functions) and follows it: the current step
and a progress bar of scored shards, then the manifest's counts. ``--via-endpoint`` runs the
variant whose score step calls the deployed endpoint; ``--here`` runs the same steps in this
process. The pipeline is ``SLUICE_BATCH_STATE_MACHINE_ARN``, ``--state-machine``, or found by
name (``sluice.names``) from ``--stage`` and the caller's account and region.

Exit codes: 0 when the run succeeded, 1 when it failed (failed shards, too many rejects; the
manifest says why), 2 for a request the user got wrong.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from sluice import aws
from sluice.cli.refs import ModelRef, model_ref
from sluice.errors import SluiceError
from sluice.names import FAILED, SUCCEEDED, batch_state_machine_name, stage_bucket_name
from sluice.pipelines.batch import new_run_id, run_local, start_run
from sluice.pipelines.batch_request import (
    DEFAULT_MAX_REJECT_SHARE,
    DEFAULT_SHARD_ROWS,
    OUTPUT_FORMATS,
    BatchRequest,
    BatchScope,
)
from sluice.pipelines.skeleton import error_cause, execution_cause, follow_execution
from sluice.settings import Settings

STEPS = {"PreprocessInput": "preprocess", "ScoreShards": "score", "PostprocessOutput": "postprocess"}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("batch", help="batch scoring pipelines")
    commands = parser.add_subparsers(dest="batch_command", required=True, metavar="COMMAND")
    run_parser = commands.add_parser("run", help="score a CSV or Parquet file and follow the run")
    run_parser.add_argument(
        "--model",
        required=True,
        type=model_ref,
        help="NAME (its champion), NAME:VERSION or NAME@ALIAS",
    )
    run_parser.add_argument(
        "--input",
        required=True,
        help="CSV or Parquet file: s3://bucket/key, or a local path (uploaded to the work bucket first)",
    )
    run_parser.add_argument(
        "--output",
        default="",
        help="output folder: a name under the work bucket's batch/output/<model>/, or that s3:// URI "
        "(default: <that>/<run id>/)",
    )
    run_parser.add_argument("--version", type=int, help=argparse.SUPPRESS)  # older form of NAME:VERSION
    run_parser.add_argument("--format", choices=OUTPUT_FORMATS, help="output format (default: the input's)")
    run_parser.add_argument("--shard-rows", type=int, default=DEFAULT_SHARD_ROWS, help="rows per shard")
    run_parser.add_argument(
        "--max-reject-share",
        type=float,
        default=DEFAULT_MAX_REJECT_SHARE,
        help="fail the run if more than this share of rows is rejected (default 0.05)",
    )
    run_parser.add_argument(
        "--via-endpoint", action="store_true", help="score by calling the deployed endpoint"
    )
    run_parser.add_argument("--here", action="store_true", help="run the steps in this process")
    run_parser.add_argument("--state-machine", default="", help="batch state machine ARN")
    run_parser.add_argument(
        "--stage", default=argparse.SUPPRESS, help="as `sluice --stage` (default $SLUICE_STAGE, else dev)"
    )
    run_parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    run_parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    ref = args.model.with_version(args.version)
    args.model = ref.name
    settings = Settings.from_env().for_model(ref.name)
    work_bucket = settings.work_bucket or _pipeline(settings, args)[1]
    event = {
        "model": ref.name,
        "input_uri": _input_uri(settings, args),
        "output_uri": _output_uri(args.output, model=ref.name, work_bucket=work_bucket),
        "version": _version(settings, ref),
        "output_format": args.format or "",
        "shard_rows": args.shard_rows,
        "max_reject_share": args.max_reject_share,
        "trigger": "manual",
    }
    if args.via_endpoint and settings.batch_endpoint_url:
        # The stage's endpoint as this caller reaches it; the score step honours it only on the
        # local stack (SLUICE_LOCAL), where the template's execute-api URL does not resolve.
        event["endpoint_url"] = settings.batch_endpoint_url
    run_id = new_run_id(args.model)
    # The pipeline's own scope (its model, the stage's output prefix, no fault drill): user
    # errors surface here, before anything starts, as the first step would report them.
    scope = BatchScope(model=ref.name, work_bucket=work_bucket)
    request = BatchRequest.from_event(event, scope=scope, run_id=run_id)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks = {
            "preprocess": bar.add_task("preprocess", total=1, start=False),
            "score": bar.add_task("score shards", total=None, start=False),
            "postprocess": bar.add_task("postprocess", total=1, start=False),
        }
        if args.here:
            summary = _run_here(settings, request, args, bar, tasks)
        else:
            summary = _follow(settings, args, event, scope, run_id, bar, tasks)
    manifest = summary.get("manifest") or {}
    if args.json:
        print(json.dumps(manifest, indent=2, default=str))
    else:
        console.print(_describe(manifest, summary.get("manifest_uri")))
    return 0 if summary.get("status") == SUCCEEDED else 1


def _version(settings: Settings, ref: ModelRef) -> int | None:
    """The version to score with; ``None`` is the champion, resolved by the pipeline."""
    if ref.alias in (None, "champion"):
        return ref.version
    from sluice.registry.store import ModelRegistry

    return ref.require_version(ModelRegistry.from_settings(settings))


def _input_uri(settings: Settings, args: argparse.Namespace) -> str:
    """``--input``: an S3 URI as given; a local file is uploaded to the work bucket first."""
    if args.input.startswith("s3://"):
        return str(args.input)
    path = Path(args.input).expanduser()
    if not path.is_file():
        raise SluiceError(f"--input {args.input}: no such file (give a local path or s3://bucket/key)")
    _machine, work = _pipeline(settings, args)
    key = f"batch/uploads/{args.model}/{int(time.time())}-{path.name}"
    aws.client("s3").upload_file(str(path), work, key)
    return f"s3://{work}/{key}"


def _run_here(
    settings: Settings,
    request: BatchRequest,
    args: argparse.Namespace,
    bar: Progress,
    tasks: dict[str, TaskID],
) -> dict[str, Any]:
    if args.via_endpoint:
        settings.require("batch_endpoint_url")
    settings.require("work_bucket")

    def progress(step: str, done: int, total: int) -> None:
        bar.start_task(tasks[step])
        bar.update(tasks[step], completed=done, total=total)

    bar.start_task(tasks["preprocess"])
    if not args.via_endpoint:
        settings = replace(settings, batch_endpoint_url="")
    return run_local(settings, request, progress=progress)


def _follow(
    settings: Settings,
    args: argparse.Namespace,
    event: dict[str, Any],
    scope: BatchScope,
    run_id: str,
    bar: Progress,
    tasks: dict[str, TaskID],
) -> dict[str, Any]:
    machine, work = _pipeline(settings, args)
    sfn = aws.client("stepfunctions")
    try:
        arn = start_run(machine, event, scope=scope, run_id=run_id)
    except sfn.exceptions.StateMachineDoesNotExist:
        raise SluiceError(
            f"batch state machine {machine} does not exist (deployed? right --stage?)"
        ) from None
    s3 = aws.client("s3")

    def count(prefix: str) -> int:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=work, Prefix=f"batch/{run_id}/{prefix}/")
        return sum(page.get("KeyCount", 0) for page in pages)

    seen: set[str] = set()

    def on_state(name: str, entered: bool) -> None:
        step = STEPS.get(name)
        if step is None:
            return
        if entered:
            bar.start_task(tasks[step])
        elif step not in seen:
            seen.add(step)
            if step != "score":
                bar.update(tasks[step], completed=1)

    def on_poll() -> None:
        if "preprocess" in seen and "score" not in seen:
            bar.update(tasks["score"], completed=count("scored"), total=count("shards"))

    status = follow_execution(arn, on_state, on_poll=on_poll)
    if "preprocess" in seen:
        bar.update(tasks["score"], completed=count("scored"), total=count("shards"))
    output = json.loads(status.get("output") or "{}")
    summary: dict[str, Any] = dict(output.get("summary") or {})
    if not summary:
        summary = {"status": status["status"], "manifest": _stored_manifest(s3, event, work, run_id, status)}
    if status["status"] != "SUCCEEDED":
        summary["status"] = status["status"]
    return summary


def _output_uri(output: str, *, model: str, work_bucket: str) -> str:
    """``--output`` as the pipeline takes it: an ``s3://`` URI as given, a folder name under the model's prefix."""
    if not output or output.startswith("s3://"):
        return output
    return f"s3://{work_bucket}/batch/output/{model}/{output.strip('/')}/"


def _pipeline(settings: Settings, args: argparse.Namespace) -> tuple[str, str]:
    """The batch state machine's ARN and the work bucket: configured, or found by name."""
    machine = args.state_machine or ("" if args.via_endpoint else settings.batch_state_machine_arn)
    region = settings.region or "us-east-1"
    account = ""
    if not machine or not settings.work_bucket:
        account = aws.client("sts").get_caller_identity()["Account"]
    if not machine:
        name = batch_state_machine_name(args.stage or "dev", args.model, via_endpoint=args.via_endpoint)
        machine = f"arn:aws:states:{region}:{account}:stateMachine:{name}"
    work = settings.work_bucket or stage_bucket_name(
        "work", stage=args.stage or "dev", account=account, region=region
    )
    return machine, work


def _stored_manifest(
    s3: Any, event: dict[str, Any], work: str, run_id: str, status: dict[str, Any]
) -> dict[str, Any]:
    """The run's manifest when the execution's output does not carry it (a failed run)."""
    output = event.get("output_uri") or f"s3://{work}/batch/output/{event['model']}/{run_id}/"
    bucket, _, prefix = output[5:].partition("/")
    key = f"{prefix.rstrip('/')}/manifest.json" if prefix else "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        if manifest.get("status") in (SUCCEEDED, FAILED):  # not the claim of a run that died early
            return manifest
    except Exception:  # no manifest (the run failed before postprocess): the notification says why
        pass
    return {"run_id": run_id, "status": FAILED, "reasons": [execution_cause(status)]}


def _describe(manifest: dict[str, Any], uri: str | None) -> str:
    if not manifest:
        return "no manifest"
    head = (
        f"[bold]{manifest.get('model')} v{manifest.get('model_version')}[/] run {manifest.get('run_id')}: "
        f"{manifest.get('status')}"
    )
    counts = (
        f"rows in {manifest.get('rows_in')}, out {manifest.get('rows_out')}, rejected {manifest.get('rejects')}, "
        f"{manifest.get('shards')} shard(s) in {manifest.get('duration_s')} s"
    )
    lines = [head, counts]
    for reason in manifest.get("reasons") or []:
        lines.append(f"  failed: {reason}")
    for shard in manifest.get("failed_shards") or []:
        lines.append(f"  {shard.get('shard')}: {shard.get('error')}: {error_cause(shard.get('cause'))}")
    for key in ("predictions_uri", "rejects_uri"):
        if manifest.get(key):
            lines.append(f"  {key.removesuffix('_uri')}: {manifest[key]}")
    if uri:
        lines.append(f"  manifest: {uri}")
    return "\n".join(lines)
