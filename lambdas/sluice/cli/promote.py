"""``sluice --stage prod promote NAME:VERSION``: ask prod to pull an Approved dev version.

Prod decides for prod: this invokes the prod stage's promotion function
(:mod:`sluice.handlers.promote`, named by :func:`sluice.names.promotion_function_name`), which
reads the dev registry across accounts, verifies the dev approval's signature and every
artifact, and registers the copy in prod as ``PendingManualApproval``. Run it with prod
credentials allowed to invoke that function (the prod deployer role); then a prod approver
approves the copy (``sluice --stage prod models approve NAME:VERSION``).
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from sluice import aws
from sluice.cli.refs import model_ref
from sluice.errors import SluiceError
from sluice.names import promotion_function_name


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "promote", help="pull an Approved version of the source stage (dev) into this stage (prod)"
    )
    parser.add_argument("model", type=model_ref, help="NAME:VERSION of the source stage's Approved version")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    stage = getattr(args, "stage", None)
    if not stage:
        raise SluiceError("name the stage that pulls the version: `sluice --stage prod promote NAME:VERSION`")
    ref = args.model
    if ref.version is None:
        raise SluiceError("give the source version as NAME:VERSION (aliases are the source stage's to resolve)")
    response = aws.client("lambda").invoke(
        FunctionName=promotion_function_name(stage),
        Payload=json.dumps({"model": ref.name, "version": ref.version}).encode(),
    )
    result = json.loads(response["Payload"].read() or b"{}")
    if response.get("FunctionError") or "error" in result:
        raise SluiceError(f"promotion refused: {result.get('error') or result.get('errorMessage') or result}")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        Console().print(
            f"{ref.name} {result['from']['stage']} v{result['from']['version']} → {stage} v{result['to']['version']} "
            f"({result['to']['status']}, {result['artifacts']} artifacts verified). Approve it as the {stage} "
            f"approver: sluice --stage {stage} models approve {ref.name}:{result['to']['version']}"
        )
    return 0
