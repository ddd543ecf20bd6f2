#!/usr/bin/env python3
"""CDK entry point: reads context once and builds one Stage per selected account."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.config import AppConfig, ConfigError
from infra.stage import SluiceStage

ROOT = Path(__file__).resolve().parent


def build_app(context: dict[str, Any] | None = None, outdir: str | None = None) -> cdk.App:
    """Build the app.

    Context comes from the CDK CLI (``cdk.json`` plus ``-c``) or, when run as ``python app.py``
    or from tests, from ``cdk.json`` here; ``context`` overrides both (tests).
    """
    if outdir is None and "CDK_OUTDIR" not in os.environ:
        outdir = str(ROOT / "cdk.out")
    app = cdk.App(context=context, outdir=outdir)
    defaults = json.loads((ROOT / "cdk.json").read_text()).get("context", {})
    for key, value in defaults.items():
        if app.node.try_get_context(key) is None:
            app.node.set_context(key, value)
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
