"""``sluice endpoint``: placeholder, replaced by its issue's implementation."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("endpoint", help="(not implemented yet)")
    parser.set_defaults(func=lambda args: 0)
