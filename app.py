#!/usr/bin/env python3
"""CDK entry point: reads context once and builds one Stage per selected account."""

from __future__ import annotations

import sys

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.config import AppConfig, ConfigError
from infra.stage import SluiceStage


def build_app(context: dict | None = None, outdir: str | None = None) -> cdk.App:
    """Build the app; ``context`` overrides ``cdk.json`` (used by tests)."""
    app = cdk.App(context=context, outdir=outdir)
    config = AppConfig.from_context(app.node.try_get_context)
    for stage in config.stages:
        SluiceStage(app, stage.construct_id, config=stage)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def main() -> None:
    try:
        app = build_app()
    except ConfigError as err:
        print(f"sluice: {err}", file=sys.stderr)
        sys.exit(2)
    app.synth()


if __name__ == "__main__":
    main()
