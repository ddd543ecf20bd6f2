"""Fixtures shared by every test suite: fake AWS credentials and one synthesized app per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Never reach a real account from tests, whatever the developer's shell holds.
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_var, None)
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-west-1",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "POWERTOOLS_METRICS_NAMESPACE": "Sluice",
        "POWERTOOLS_SERVICE_NAME": "sluice-tests",
        # Local alias routing draws from a seeded stream, so a weighted-traffic assertion sees
        # the same sample on every run (the draws stay random-looking: see test_gateway.py).
        "SLUICE_LOCAL_ROUTING_SEED": "sluice-tests",
    }
)


@pytest.fixture(autouse=True)
def _fresh_clients():
    """Each test gets new boto3 clients, created after its moto mock starts."""
    from sluice.aws import reset_clients

    reset_clients()
    yield
    reset_clients()


@pytest.fixture(scope="session")
def assembly_dir(tmp_path_factory) -> Path:
    """The CDK app synthesized once per test session (both stages), as ``cdk synth`` would."""
    from app import build_app

    outdir = tmp_path_factory.mktemp("cdk.out")
    build_app(outdir=str(outdir)).synth()
    return outdir
