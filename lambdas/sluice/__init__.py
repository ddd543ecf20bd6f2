"""Sluice runtime package: everything that runs in AWS Lambda, in the container, in the CLI and locally."""

__version__ = "0.1.0"
