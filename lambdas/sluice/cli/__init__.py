"""The ``sluice`` command line. Each command group lives in its own module and registers itself.

The runtime's groups are listed in :func:`runtime_command_groups`. Installed packages add more
through the ``sluice.cli`` entry-point group (see :mod:`sluice.cli.plugins`): the embedded local
AWS adds ``sluice local`` and the demo adds ``sluice demo``; the runtime imports neither.

User errors print one line, ``sluice: error: <message>``, and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint

from sluice import __version__
from sluice.cli.plugins import installed_command_groups
from sluice.errors import SluiceError

AddParser = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Serverless MLOps on AWS.")
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in runtime_command_groups():
        add_parser(subparsers)
    for entry in installed_command_groups():
        _add_plugin(subparsers, entry)
    return parser


def runtime_command_groups() -> tuple[AddParser, ...]:
    """The runtime's own command groups, in the order ``sluice --help`` lists them (plugins follow).

    Imported here rather than at the top, so importing one command module (``sluice.cli.promote``)
    does not import them all.
    """
    from sluice.cli import batch, endpoint, models, monitor, promote, retrain

    return (
        models.add_parser,
        endpoint.add_parser,
        retrain.add_parser,
        batch.add_parser,
        promote.add_parser,
        monitor.add_parser,
    )


def _add_plugin(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], entry: EntryPoint) -> None:
    """Add an installed command group; one that cannot be imported is skipped with a warning."""
    try:
        add_parser: AddParser = entry.load()
    except ImportError as err:
        # A broken plugin must not take the runtime's own commands down with it.
        print(
            f"sluice: warning: command group {entry.name!r} ({entry.value}) not loaded: {err}",
            file=sys.stderr,
        )
        return
    add_parser(subparsers)


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
