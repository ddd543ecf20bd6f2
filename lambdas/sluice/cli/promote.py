"""``sluice promote``: copy an Approved version from the dev registry into the prod registry.

Run it as the dev deployer role: it reads dev, assumes the prod promotion role and writes prod.
Accounts and regions come from the app's ``cdk.json`` context (``<stage>:account``, ``<stage>:region``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from sluice.cli.refs import model_ref
from sluice.errors import SluiceError
from sluice.registry.promotion import StageRegistry, promote

STAGES = ("dev", "prod")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("promote", help="promote an Approved model version from dev to prod")
    parser.add_argument("--model", required=True, type=model_ref, help="NAME:VERSION or NAME@ALIAS")
    parser.add_argument("--version", type=int, help=argparse.SUPPRESS)  # older form of NAME:VERSION
    parser.add_argument("--from", dest="source", default="dev", choices=STAGES)
    parser.add_argument("--to", dest="target", default="prod", choices=STAGES)
    parser.add_argument(
        "--cdk-json", default="cdk.json", help="where the stages' accounts are (default: cdk.json)"
    )
    parser.add_argument("--actor", default="", help="who promotes (default: the caller's ARN)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


def cdk_context(path: Path) -> dict[str, Any]:
    """The ``context`` object of the app's ``cdk.json`` (the stages' accounts and regions)."""
    try:
        return dict(json.loads(path.read_text())["context"])
    except FileNotFoundError:
        raise SluiceError(f"{path} not found (run from the app directory or pass --cdk-json)") from None
    except (ValueError, KeyError, TypeError):
        raise SluiceError(f"{path} is not a CDK app file with a 'context' object") from None


def stage_registry(context: dict[str, Any], stage: str) -> StageRegistry:
    try:
        return StageRegistry(stage, str(context[f"{stage}:account"]), str(context[f"{stage}:region"]))
    except KeyError as err:
        raise SluiceError(f"cdk.json context lacks {err.args[0]!r}") from None


def run(args: argparse.Namespace) -> int:
    if args.source == args.target:
        raise SluiceError("--from and --to must name different stages")
    context = cdk_context(Path(args.cdk_json))
    source, target = stage_registry(context, args.source), stage_registry(context, args.target)
    ref = args.model.with_version(args.version)
    args.model, args.version = ref.name, ref.require_version(source.registry())
    actor = args.actor or source.registry().caller()
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"copying {args.model} v{args.version}", total=None)
        result = promote(
            args.model,
            args.version,
            source=source,
            target=target,
            actor=actor,
            progress=lambda name: bar.update(task, advance=1, description=f"verified {name}"),
        )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(
            f"{args.model} {args.source} v{result.source_version} → {args.target} v{result.target_version} "
            f"(account {target.account}), {result.artifacts} artifacts verified; recorded in both audit trails."
        )
    return 0
