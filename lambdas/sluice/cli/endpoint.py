"""``sluice endpoint``: deploy model versions to an endpoint and route its traffic.

::

    sluice endpoint deploy  NAME:VERSION [--flavour onnx|sklearn|python] [--weight W]   (or NAME@ALIAS)
    sluice endpoint shift   NAME:VERSION WEIGHT         # manual split / A/B test
    sluice endpoint promote NAME:VERSION                # 100 % to VERSION
    sluice endpoint rollback NAME                       # back to the previous routing
    sluice endpoint canary  NAME:VERSION [--steps 0.1,0.5] [--interval 300]
    sluice endpoint status  NAME
    sluice endpoint compare NAME:V1 NAME:V2 [--minutes 60]    (or NAME V1 V2)

The older form ``NAME VERSION`` still works. The endpoint function is
``sluice-<stage>-<model>-endpoint`` (``sluice --stage``, default ``dev``), the stage's own
(``SLUICE_ENDPOINT_FUNCTION``, found by ``--stage``) or ``--function``. The registry comes from
``SLUICE_REGISTRY_TABLE`` and ``SLUICE_REGISTRY_BUCKET``. Every traffic change is recorded in
the registry's audit trail.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sluice.cli.refs import ModelRef, model_ref, parse_ref, positive_int, split_version
from sluice.errors import SluiceError
from sluice.settings import Settings

if TYPE_CHECKING:
    from sluice.serving.traffic import EndpointTraffic, Route

Command = Callable[[argparse.Namespace], int]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("endpoint", help="model endpoints: deploy versions, shift traffic, canary")
    commands = parser.add_subparsers(dest="endpoint_command", required=True, metavar="SUBCOMMAND")

    def command(
        name: str, help: str, func: Command, *, version: bool = True, ref_help: str = "registered model name"
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        if version:
            sub.add_argument("ref", type=model_ref, metavar="MODEL", help="NAME:VERSION or NAME@ALIAS")
            sub.add_argument("old_version", nargs="?", type=positive_int, help=argparse.SUPPRESS)
        else:
            sub.add_argument("ref", type=model_ref, metavar="NAME", help=ref_help)
        sub.add_argument(
            "--stage", default=argparse.SUPPRESS, help="as `sluice --stage` (default $SLUICE_STAGE, else dev)"
        )
        sub.add_argument("--function", default=None, help="endpoint function name (overrides --stage)")
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        sub.set_defaults(func=func)
        return sub

    deploy = command("deploy", "publish an Approved model version as a Lambda version", cmd_deploy)
    deploy.add_argument(
        "--flavour", choices=("onnx", "sklearn", "python"), default=None, help="default: what the version has for this endpoint"
    )
    deploy.add_argument("--weight", type=_weight, default=0.0, help="traffic share to give it at once (0-1)")

    shift = command(
        "shift",
        "send a share of the traffic to a deployed version",
        cmd_shift,
        version=False,
        ref_help="NAME:VERSION or NAME@ALIAS",
    )
    shift.add_argument(
        "rest",
        nargs="+",
        metavar="WEIGHT",
        help="its share, 0-1 (the primary keeps the rest); older form: NAME VERSION WEIGHT",
    )

    command("promote", "route 100%% of the traffic to a deployed version", cmd_promote)
    command("rollback", "undo the last promotion or drop the version under test", cmd_rollback, version=False)
    command("status", "versions on the live alias and their weights", cmd_status, version=False)

    _canary_options(command("canary", "shift in steps with health checks; promote or roll back", cmd_canary))

    compare = command(
        "compare",
        "per-version statistics and a significance test",
        cmd_compare,
        version=False,
        ref_help="NAME:VERSION (or NAME, then VERSION ...)",
    )
    compare.add_argument("versions", nargs="+", help="more versions: NAME:VERSION (or VERSION)")
    compare.add_argument("--minutes", type=float, default=60.0, help="window ending now (default 60)")


def _canary_options(canary: argparse.ArgumentParser) -> None:
    canary.add_argument("--steps", default="0.1", help="comma-separated weights, e.g. 0.1 or 0.1,0.3,0.6")
    canary.add_argument(
        "--interval", type=float, default=300.0, help="seconds to watch each step (default 300)"
    )
    canary.add_argument("--max-errors", type=float, default=0.0, help="server errors allowed per step")
    canary.add_argument("--max-latency-ms", type=float, default=1000.0, help="mean latency allowed (ms)")
    canary.add_argument(
        "--positive-bounds", default="0.01,0.99", help="allowed mean positive probability, LOW,HIGH"
    )
    canary.add_argument("--min-invocations", type=int, default=1, help="requests a step must see to pass")


# --- commands --------------------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace) -> int:
    traffic, version = _target(args)
    route = traffic.deploy(version, flavour=args.flavour)
    if args.weight >= 1.0:
        traffic.promote(version)
    elif args.weight > 0.0:
        traffic.shift(version, args.weight)
    result = {"deployed": vars_of(route), **traffic.status()}
    return _print(args, result, f"deployed {args.model} v{version} as Lambda version {route.lambda_version}")


def cmd_shift(args: argparse.Namespace) -> int:
    ref, rest = split_version(args.ref, args.rest, keep=1)
    try:
        weight = _weight(rest[0])
    except argparse.ArgumentTypeError as err:
        raise SluiceError(f"endpoint shift {ref}: {err}") from None
    args.ref, args.old_version = ref, None
    traffic, version = _target(args)
    traffic.shift(version, weight)
    return _print(args, traffic.status(), f"{weight:.0%} of {args.model} traffic to v{version}")


def cmd_promote(args: argparse.Namespace) -> int:
    traffic, args.version = _target(args)
    traffic.promote(args.version)
    return _print(args, traffic.status(), f"100% of {args.model} traffic to v{args.version}")


def cmd_rollback(args: argparse.Namespace) -> int:
    traffic = _traffic(args)
    traffic.rollback()
    return _print(args, traffic.status(), f"rolled back {args.model}")


def cmd_status(args: argparse.Namespace) -> int:
    return _print(args, _traffic(args).status(), None)


def cmd_canary(args: argparse.Namespace) -> int:
    from sluice.serving.canary import HealthPolicy

    steps = [_weight(s) for s in args.steps.split(",") if s.strip()]
    low, high = (float(x) for x in _pair(args.positive_bounds, "--positive-bounds"))
    policy = HealthPolicy(
        max_errors=args.max_errors,
        max_latency_ms=args.max_latency_ms,
        positive_bounds=(low, high),
        min_invocations=args.min_invocations,
    )
    traffic, args.version = _target(args)

    def report(step: dict[str, Any]) -> None:
        if not args.json:
            health = step["health"]
            verdict = "breach: " + "; ".join(step["breaches"]) if step["breaches"] else "healthy"
            print(
                f"step {step['weight']:.0%}: {health['invocations']:g} requests, {health['errors']:g} errors, "
                f"latency {_ms(health['latency_avg_ms'])} -> {verdict}"
            )

    result = traffic.canary(
        args.version, steps=steps, interval_s=args.interval, policy=policy, on_step=report
    )
    out = {**result.to_dict(), **traffic.status()}
    _print(
        args,
        out,
        f"canary of {args.model} v{args.version}: {result.outcome}"
        + (f" ({result.reason})" if result.reason else ""),
    )
    return 0 if result.outcome == "promoted" else 1


def cmd_compare(args: argparse.Namespace) -> int:
    traffic = _traffic(args)
    start = datetime.now(UTC) - timedelta(minutes=args.minutes)
    versions = _compared_versions(args.ref, args.versions, traffic)
    report = traffic.compare(versions, start=start)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.model}: last {args.minutes:g} minutes")
    for column in (
        "version",
        "requests",
        "rows",
        "errors",
        "client errors",
        "latency avg",
        "P(positive)",
        "positive rate",
    ):
        table.add_column(column, justify="right")
    for v in report["versions"]:
        table.add_row(
            str(v["model_version"]),
            f"{v['invocations']:g}",
            f"{v['rows']:g}",
            f"{v['errors']:g}",
            f"{v['client_errors']:g}",
            _ms(v["latency_avg_ms"]),
            "-" if v["positive_probability"] is None else f"{v['positive_probability']:.3f}",
            "-" if v["positive_rate"] is None else f"{v['positive_rate']:.3f}",
        )
    console = Console()
    console.print(table)
    test = report.get("test")
    if test:
        if test.get("p_value") is None:
            console.print(f"{test['test']} test: not enough data ({test.get('reason', '')})")
        else:
            console.print(
                f"{test['test']} test on the positive rate: z = {test['z']:.2f}, p = {test['p_value']:.4g}"
                + (" (significant at 5%)" if test["p_value"] < 0.05 else " (no significant difference at 5%)")
            )
    return 0


# --- helpers ---------------------------------------------------------------------------------


def _target(args: argparse.Namespace) -> tuple[EndpointTraffic, int]:
    """The endpoint's traffic and the version ``args.ref`` (with the older positional) names."""
    ref: ModelRef = args.ref.with_version(getattr(args, "old_version", None))
    traffic = _traffic(args)
    return traffic, ref.require_version(traffic.registry)


def _compared_versions(ref: ModelRef, more: list[str], traffic: EndpointTraffic) -> list[int]:
    """``NAME:1 NAME:2`` or ``NAME 1 2``: the versions, all of one model."""
    versions = [ref.require_version(traffic.registry)] if ref.pinned else []
    for text in more:
        other = ref.with_version(text) if text.isdigit() else parse_ref(text)
        if other.name != ref.name:
            raise SluiceError(f"endpoint compare: {other} is not a version of {ref.name}")
        versions.append(other.require_version(traffic.registry))
    return versions


def _traffic(args: argparse.Namespace) -> EndpointTraffic:
    from sluice.registry.store import ModelRegistry
    from sluice.serving.traffic import EndpointTraffic, default_function_name

    args.model = args.ref.name
    settings = Settings.from_env()
    settings.require("registry_table", "registry_bucket")
    # The stage lists each model's function (SLUICE_STAGE_MODELS); without it, the naming convention.
    stage_model = os.environ.get("SLUICE_STAGE_MODEL")
    function = (
        args.function
        or settings.endpoint_function(args.model)
        or (os.environ.get("SLUICE_ENDPOINT_FUNCTION") if stage_model in (None, args.model) else None)
        or default_function_name(args.model, getattr(args, "stage", None) or "dev")
    )
    registry = ModelRegistry.from_settings(settings)
    # No actor: the audit trail names the caller STS verifies, never a name given on the command line.
    return EndpointTraffic(function_name=function, model_name=args.model, registry=registry)


def _print(args: argparse.Namespace, result: dict[str, Any], headline: str | None) -> int:
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if headline:
        console.print(headline)
    table = Table(title=f"{result['function']}:{result['alias']}")
    for column in ("Lambda version", "model version", "flavour", "weight"):
        table.add_column(column, justify="right")
    for route in result["routes"]:
        model_version = route["model_version"]
        table.add_row(
            route["lambda_version"],
            "champion alias" if model_version is None else str(model_version),
            route["flavour"] or "-",
            f"{route['weight']:.0%}",
        )
    console.print(table)
    return 0


def vars_of(route: Route) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(route)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a weight between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"weights are between 0 and 1, got {value:g}")
    return value


def _pair(text: str, option: str) -> tuple[str, str]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise SluiceError(f"{option}: expected LOW,HIGH, got {text!r}")
    return parts[0], parts[1]
