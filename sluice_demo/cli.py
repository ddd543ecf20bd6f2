"""``sluice demo``: the main local job. The whole lifecycle on the embedded local AWS.

It deploys the synthesized dev stage onto an in-process moto server (:mod:`localaws`), runs the
eight lifecycle steps of :mod:`sluice_demo.lifecycle` against it, prints a summary table and writes
the drift report and a lifecycle report (HTML) to the output folder.

The ``sluice`` command finds this group through the ``sluice.cli`` entry point ``demo``
(``pyproject.toml``), which names :func:`add_parser`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from localaws.assembly import read_assembly
from sluice.cli.stage import register_stack, unregister_stack

if TYPE_CHECKING:
    from localaws.env import LocalAws
    from sluice_demo.lifecycle import Lifecycle, Stage, Step
    from sluice_demo.story import Comparison


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="run the Sluice lifecycle locally on the synthesized app")
    parser.add_argument("--assembly", default="cdk.out", help="synthesized cloud assembly (default: cdk.out)")
    parser.add_argument("--out", default="demo-output", help="folder for the reports (default: demo-output)")
    parser.add_argument("--state-dir", default=".sluice/demo", help="local AWS state (default: .sluice/demo)")
    parser.add_argument(
        "--rows", type=int, default=4_000, help="rows of the generated dataset (default 4000)"
    )
    parser.add_argument("--requests", type=int, default=300, help="scoring requests per traffic step")
    parser.add_argument(
        "--split-requests",
        type=int,
        default=1_000,
        help="requests that measure the 10 %% split (default 1000)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="when done, stay up until Ctrl-C or `sluice local down` (as `sluice local up` does)",
    )
    parser.set_defaults(func=run)


def synth_summary(console: Console, assembly: str) -> None:
    table = Table(title="What `cdk deploy` would create (synthesized app)")
    for column in ("stage", "stack", "account", "region", "resources", "main resource types"):
        table.add_column(column)
    for stack in read_assembly(assembly):
        types = stack.resource_types()
        main = Counter({t.removeprefix("AWS::"): n for t, n in types.items() if t != "AWS::CDK::Metadata"})
        table.add_row(
            stack.stage,
            stack.stack_name,
            stack.account,
            stack.region,
            str(sum(main.values())),
            ", ".join(f"{t} x{n}" for t, n in main.most_common(5)),
        )
    console.print(table)


def run(args: argparse.Namespace) -> int:
    from localaws import LocalAws
    from sluice_demo.lifecycle import Lifecycle
    from sluice_demo.report import lifecycle_html

    console = Console()
    synth_summary(console, args.assembly)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with console.status("Deploying the dev stage onto the embedded local AWS..."):
        env = LocalAws.start(args.assembly, state_dir=args.state_dir)
    # Registered while it runs, so `sluice --stage dev`, `sluice local status|env|down` find it.
    register_stack(env.state_dir / "state.json", stage=env.stage, kind="demo")
    try:
        console.print(f"[green]local AWS up[/] in {env.timings.total:.1f} s at {env.endpoint_url}")
        stage = resolve_stage(env)
        status = console.status("")

        def on_step(step: Step, done: bool) -> None:
            if done:
                status.stop()
                console.print(f"[green]✓[/] {step.number}. {step.title} [dim]({step.seconds:.1f} s)[/]")
                for key, value in step.figures.items():
                    console.print(f"    [dim]{key}:[/] {_short(value)}")
            else:
                status.update(f"{step.number}. {step.title} ...")
                status.start()

        lifecycle = Lifecycle(
            stage, rows=args.rows, requests=args.requests, split_requests=args.split_requests, on_step=on_step
        )
        try:
            steps = lifecycle.run()
        finally:
            status.stop()
        elapsed = time.perf_counter() - started
        console.print(summary_table(lifecycle, elapsed))
        console.print(comparison_table(lifecycle.comparison))
        drift_html = save_drift_report(stage, out)
        report = out / "lifecycle.html"
        report.write_text(
            lifecycle_html(
                steps,
                elapsed,
                drift_html,
                timeline=lifecycle.timeline,
                comparison=lifecycle.comparison,
                decision=lifecycle.decision,
            )
        )
        console.print(f"Reports: [bold]{report}[/]" + (f" and [bold]{drift_html}[/]" if drift_html else ""))
        if args.keep:
            _keep(console, env, stage)
    finally:
        unregister_stack()
        env.stop()
    return 0


def resolve_stage(env: LocalAws, cdk_json: str = "cdk.json") -> Stage:
    from sluice.names import registry_table_name, stage_bucket_name
    from sluice_demo.lifecycle import Stage

    model = _model_name(env)

    def bucket(purpose: str) -> str:
        return stage_bucket_name(purpose, stage="dev", account=env.account, region=env.region)

    return Stage(
        model=model,
        work_bucket=bucket("work"),
        capture_bucket=bucket("capture"),
        retrain_state_machine_arn=env.physical_id(
            "RetrainingStateMachine", resource_type="AWS::StepFunctions::StateMachine"
        ),
        endpoint_function=f"sluice-dev-{model}-endpoint",
        monitor_function=env.physical_id("MonitoringDriftJob", resource_type="AWS::Lambda::Function"),
        gateway_url=env.gateway_url("EndpointRestApi"),
        registry_table=registry_table_name("dev"),
        registry_bucket=bucket("artifacts"),
        alarm_names=[f"sluice-dev-{model}-drift-share"],
        prod_account=_prod_account(Path(cdk_json)),
    )


def _prod_account(cdk_json: Path) -> str:
    """``prod:account`` from the app's cdk.json context ("" without one)."""
    try:
        return str(json.loads(cdk_json.read_text())["context"].get("prod:account", ""))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ""


def _model_name(env: LocalAws) -> str:
    for resource in env.resources:
        if resource.resource_type == "AWS::Lambda::Function" and resource.physical_id.endswith("-endpoint"):
            return resource.physical_id.removeprefix("sluice-dev-").removesuffix("-endpoint")
    return "credit-risk"


def summary_table(lifecycle: Lifecycle, elapsed: float) -> Table:
    table = Table(title=f"Sluice lifecycle on the embedded local AWS ({elapsed:.0f} s)")
    for column in ("step", "what happened", "figures", "time"):
        table.add_column(column)
    for step in lifecycle.steps:
        table.add_row(
            str(step.number),
            step.title,
            "\n".join(f"{k}: {_short(v)}" for k, v in step.figures.items()),
            f"{step.seconds:.1f} s",
        )
    return table


def comparison_table(comparison: Comparison) -> Table:
    """M1 and M2 per metric on the same holdout rows (the retraining run's own comparison)."""
    one, two = comparison.champion_version, comparison.challenger_version
    table = Table(title=f"M1 vs M2 on the same holdout: {comparison.holdout()}")
    for column in ("metric", f"M1 (v{one})", f"M2 (v{two})", "M2 - M1"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric in comparison.metrics:
        primary = " (primary)" if metric == comparison.primary_metric else ""
        champion, challenger = comparison.champion[metric], comparison.challenger[metric]
        table.add_row(
            metric + primary, f"{champion:.4f}", f"{challenger:.4f}", f"{challenger - champion:+.4f}"
        )
    table.caption = f"On {comparison.primary_metric}, M2 is {comparison.verdict} than M1."
    return table


def save_drift_report(stage: Stage, out: Path) -> Path | None:
    """Copy the newest HTML drift report the drift job wrote to S3 into ``out``."""
    from sluice import aws

    s3 = aws.client("s3")
    reports = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stage.capture_bucket, Prefix="reports/"):
        reports += [o for o in page.get("Contents", []) if o["Key"].endswith(".html")]
    if not reports:
        return None
    newest = max(reports, key=lambda o: (o["LastModified"], o["Key"]))
    path = out / "drift-report.html"
    path.write_bytes(s3.get_object(Bucket=stage.capture_bucket, Key=newest["Key"])["Body"].read())
    return path


def _keep(console: Console, env: LocalAws, stage: Stage) -> None:
    example = {
        "instances": [
            {
                "income": 52000,
                "debt_ratio": 0.3,
                "age": 41,
                "credit_lines": 7,
                "utilisation": 0.4,
                "late_payments": 1,
                "tenure": 8,
                "loan_amount": 18000,
                "region": "north",
                "product": "card",
            }
        ]
    }
    console.print(
        "The local stack stays up until Ctrl-C or `sluice local down`; `sluice --stage dev ...` "
        "finds it. Try a signed request (the API takes SigV4 only, as in AWS):"
    )
    console.print(
        '  eval "$(sluice local env)"\n'
        '  curl -s --aws-sigv4 "aws:amz:$AWS_REGION:execute-api" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" '
        f"-H 'Content-Type: application/json' -d '{json.dumps(example)}' {stage.gateway_url}/predict",
        soft_wrap=True,
        markup=False,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # `kill` stops it as cleanly as Ctrl-C
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    console.print("stopping")


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 160 else text[:157] + "..."
