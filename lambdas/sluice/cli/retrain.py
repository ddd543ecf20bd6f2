"""``sluice retrain``: retrain a model on fresh data, register it pending approval, never deploy.

By default it starts the stage's retraining state machine (``SLUICE_RETRAIN_STATE_MACHINE_ARN``)
and follows the execution step by step; ``--here`` runs the same four steps in this process.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from sluice.errors import SluiceError
from sluice.names import RETRAINING_STEPS
from sluice.pipelines.retraining import RetrainRequest, run_all, run_id_for
from sluice.pipelines.skeleton import execution_cause, follow_execution, start_execution
from sluice.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("retrain", help="retrain a model; the new version waits for approval")
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument(
        "--data",
        required=True,
        help="CSV or Parquet with features and label: s3://bucket/key, or a local path (uploaded to the work bucket)",
    )
    parser.add_argument(
        "--here", action="store_true", help="run the steps in this process, not Step Functions"
    )
    parser.add_argument(
        "--spec", help="training spec JSON file: train a new form (first version) instead of the parent's"
    )
    parser.add_argument("--json", action="store_true", help="print the final state as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except RetrainFailed as err:
        Console(stderr=True).print(f"sluice: {err}")
        return 1


def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env().for_model(args.model)
    console = Console(stderr=True)
    run_id = run_id_for(args.model, now=datetime.now(UTC), window_s=1)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as bar:
        tasks = {name: bar.add_task(f"{name}", total=1, start=False) for name in RETRAINING_STEPS}
        if args.here:
            request = RetrainRequest(args.model, args.data, run_id, spec=_read_spec(args.spec))
            current = iter(RETRAINING_STEPS)
            bar.start_task(tasks[next(current)])

            def advance(step: str, seconds: float) -> None:
                bar.update(tasks[step], completed=1, description=f"{step} ({seconds:.1f} s)")
                following = next(current, None)
                if following:
                    bar.start_task(tasks[following])

            state = run_all(settings, request, progress=advance)
        else:
            state = _follow_execution(settings, args, run_id, bar, tasks)
    if args.json:
        print(json.dumps(state, indent=2, default=str))
    else:
        console.print(
            f"[bold]{args.model} v{state['version']}[/] registered as {state['status']} "
            f"({'parent v' + str(state['parent_version']) if state['parent_version'] else 'first version'}). "
            f"Nothing was deployed. To deploy it:\n  {state['deploy_command']}"
        )
    return 0


def _follow_execution(
    settings: Settings, args: argparse.Namespace, run_id: str, bar: Progress, tasks: dict[str, TaskID]
) -> dict[str, Any]:
    settings.require("retrain_state_machine_arn")
    request: dict[str, Any] = {
        "model": args.model,
        "data_uri": _data_uri(settings, args),
        "run_id": run_id,
        "trigger": "manual",
    }
    if args.spec:
        request["spec"] = _read_spec(args.spec)
    arn = str(start_execution(settings.retrain_state_machine_arn, run_id, request))
    done: set[str] = set()

    def on_state(name: str, entered: bool) -> None:
        step = name.lower()
        if step not in tasks:
            return
        if entered:
            bar.start_task(tasks[step])
        elif step not in done:
            done.add(step)
            bar.update(tasks[step], completed=1)

    status = follow_execution(arn, on_state)
    if status["status"] != "SUCCEEDED":
        raise RetrainFailed(
            f"retraining execution {run_id} ended {status['status']}: {execution_cause(status)}"
        )
    output: dict[str, Any] = json.loads(status["output"])
    return output


def _data_uri(settings: Settings, args: argparse.Namespace) -> str:
    """``--data``: an S3 URI as given; a local file is uploaded to the work bucket first."""
    if str(args.data).startswith("s3://"):
        return str(args.data)
    path = Path(args.data).expanduser()
    if not path.is_file():
        raise SluiceError(f"--data {args.data}: no such file (give a local path or s3://bucket/key)")
    settings.require("work_bucket")
    from sluice import aws

    key = f"datasets/{args.model}/uploads/{datetime.now(UTC):%Y%m%dT%H%M%S}-{path.name}"
    aws.client("s3").upload_file(str(path), settings.work_bucket, key)
    return f"s3://{settings.work_bucket}/{key}"


class RetrainFailed(RuntimeError):
    """The run failed (not the user's input): exit 1 with the message."""


def _read_spec(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    from sluice.models.training import TrainingSpec

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SluiceError(f"spec file {path} not found") from None
    except ValueError as err:
        raise SluiceError(f"spec file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise SluiceError(f"spec file {path} must hold a JSON object")
    return TrainingSpec.from_dict(data).to_dict()  # validated before anything starts
