"""The ``sluice`` command line. Each command group lives in its own module and registers itself.

User errors print one line, ``sluice: error: <message>``, and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sluice import __version__
from sluice.errors import SluiceError

# Command-group modules; each exposes ``add_parser(subparsers)``.
COMMAND_MODULES = (
    "sluice.cli.models",
    "sluice.cli.endpoint",
    "sluice.cli.local",
    "sluice.cli.retrain",
    "sluice.cli.batch",
    "sluice.cli.promote",
    "sluice.cli.monitor",
    "sluice.cli.demo",
)

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Serverless MLOps on AWS.")
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except SluiceError as err:
        print(f"sluice: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("sluice: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
