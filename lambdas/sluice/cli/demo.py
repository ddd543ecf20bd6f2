"""``sluice demo``: the main local job. For now: what the synthesized app would deploy."""

from __future__ import annotations

import argparse
from collections import Counter

from rich.console import Console
from rich.table import Table

from sluice.assembly import read_assembly


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the Sluice lifecycle locally on the synthesized app")
    parser.add_argument("--assembly", default="cdk.out", help="synthesized cloud assembly (default: cdk.out)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    console = Console()
    stacks = read_assembly(args.assembly)
    table = Table(title="Sluice: what `cdk deploy` would create")
    for column in ("stage", "stack", "account", "region", "resources", "main resource types"):
        table.add_column(column)
    for stack in stacks:
        types = stack.resource_types()
        main = Counter({t.removeprefix("AWS::"): n for t, n in types.items() if t != "AWS::CDK::Metadata"})
        table.add_row(
            stack.stage,
            stack.stack_name,
            stack.account,
            stack.region,
            str(sum(main.values())),
            ", ".join(f"{t} x{n}" for t, n in main.most_common(6)),
        )
    console.print(table)
    return 0
