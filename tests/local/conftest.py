"""The embedded local AWS, brought up once per test module from the session's synthesized app."""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def local_aws(assembly_dir, tmp_path_factory):
    """The synthesized dev stage running on the embedded local AWS (stopped after the module)."""
    from localaws import LocalAws

    with LocalAws.start(assembly_dir=assembly_dir, state_dir=tmp_path_factory.mktemp("local-state")) as aws:
        yield aws


def fixture_zip(module: str = "tiny_handler") -> bytes:
    """``tests/local/fixtures/<module>.py`` as a Lambda zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(FIXTURES / f"{module}.py", f"{module}.py")
    return buffer.getvalue()


def create_fixture_function(
    aws, module: str, *, timeout: int = 30, environment: dict[str, str] | None = None
) -> str:
    """Create a function running ``tests/local/fixtures/<module>.py`` through the Lambda API."""
    name = f"{module.split('_')[0]}-{uuid.uuid4().hex[:8]}"
    role = aws.client("iam").create_role(
        RoleName=f"{name}-role",
        AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
        '"Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}',
    )["Role"]["Arn"]
    aws.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler=f"{module}.lambda_handler",
        Code={"ZipFile": fixture_zip(module)},
        Timeout=timeout,
        MemorySize=256,
        Environment={"Variables": environment or {}},
    )
    return name


def create_tiny_function(aws, *, timeout: int = 30, colour: str = "blue") -> str:
    """Create the tiny function through the Lambda API; returns its name."""
    return create_fixture_function(aws, "tiny_handler", timeout=timeout, environment={"COLOUR": colour})


def create_two_versions(aws) -> str:
    """The tiny function with version 1 (COLOUR=blue) and version 2 (COLOUR=green)."""
    name = create_tiny_function(aws, colour="blue")
    client = aws.client("lambda")
    client.publish_version(FunctionName=name)
    client.update_function_configuration(FunctionName=name, Environment={"Variables": {"COLOUR": "green"}})
    client.publish_version(FunctionName=name)
    return name


def wait_execution(sfn, arn: str, timeout: float = 300.0) -> dict:
    """``describe_execution`` of ``arn`` once it is no longer RUNNING (fails after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return described
        time.sleep(0.3)
    raise AssertionError(f"{arn} still running after {timeout} s")
