"""Nothing the local AWS acknowledged is lost: ``kill -9`` of the whole stack, then ``up``.

The stage runs as ``sluice local up --background`` does for a user (its own process group, with
its Lambda workers); this test talks to it over HTTP only, as any client would, with the
credentials the state file names.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from localaws.auth import sign
from localaws.env import read_state
from sluice.models.packaging import bundle_from_training
from sluice.models.training import TrainingSpec, train
from sluice.registry.lineage import Lineage
from sluice.registry.store import ModelRegistry
from sluice.serving.traffic import EndpointTraffic
from sluice_demo import datasets

pytestmark = pytest.mark.local

MODEL = "credit-risk"
FUNCTION = f"sluice-dev-{MODEL}-endpoint"
REGISTRATIONS = 50
REQUESTS = 2000


def _sluice(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sluice", "local", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _up(state_dir: Path, assembly_dir: Path, monkeypatch) -> dict:
    """``local up --background``; points this process's clients at it, as the developer."""
    from sluice import aws

    up = _sluice(state_dir, "up", "--assembly", str(assembly_dir), "--background")
    assert up.returncode == 0, up.stdout + up.stderr
    state = read_state(state_dir)
    credentials = state["credentials"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", state["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["aws_secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", state["region"])
    monkeypatch.setenv("AWS_REGION", state["region"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    aws.reset_clients()
    return state


def _kill_stack(state_dir: Path) -> None:
    """SIGKILL to the stack's whole process group (server and workers), as a crash would."""
    pid = int((state_dir / "local.pid").read_text())
    group = os.getpgid(pid)
    assert group != os.getpgid(0), "the background stack must run in a process group of its own"
    os.killpg(group, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"the local stack (pid {pid}) outlived SIGKILL")


def _gateway_url(state: dict) -> str:
    # The default model's API (other models' sit under Model-<name>, with ids of their own).
    return next(api["url"] for api in state["apis"] if (api.get("logical_id") or "").startswith("EndpointRestApi"))


def _score(url: str, rows: list[dict]) -> Counter:
    """POST each row to /predict (signed), two callers at a time; the versions that answered."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/") + "/predict"

    def send(chunk: list[dict]) -> Counter:
        seen: Counter = Counter()
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        for row in chunk:
            body = json.dumps({"instances": [row]}).encode()
            headers = sign(
                "POST",
                f"http://{parts.netloc}{path}",
                body=body,
                headers={"Content-Type": "application/json"},
            )
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            payload = json.loads(response.read())
            assert response.status == 200, payload
            seen[payload["version"]] += 1
        connection.close()
        return seen

    with ThreadPoolExecutor(2) as pool:
        return sum(pool.map(send, [rows[0::2], rows[1::2]]), Counter())


# (key, ETag) -> rows: an object with the same ETag has the same bytes
_LINES: dict[tuple[str, str], int] = {}


def _captured_rows(bucket: str) -> int:
    """Rows in the capture objects of the model (each object read once per content)."""
    from sluice import aws

    s3 = aws.client("s3")
    objects = [
        (obj["Key"], obj["ETag"])
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"capture/model={MODEL}/"
        )
        for obj in page.get("Contents", [])
    ]

    def rows(key: str) -> int:
        from sluice.serving.capture_reader import read_object

        return len(read_object(bucket, key))  # Parquet, or JSON lines written before it

    unread = [o for o in objects if o not in _LINES]
    with ThreadPoolExecutor(4) as pool:
        _LINES.update(zip(unread, pool.map(rows, [key for key, _ in unread]), strict=True))
    return sum(_LINES[o] for o in objects)


def _wait_for_capture(bucket: str, expected: int, timeout_s: float = 60) -> int:
    """Capture is sent after each response: wait until every row was acknowledged by Firehose."""
    deadline = time.monotonic() + timeout_s
    while (found := _captured_rows(bucket)) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def _state_of_the_stage(registry: ModelRegistry, traffic: EndpointTraffic, bucket: str) -> dict:
    return {
        "versions": [r.version for r in registry.list_versions(MODEL)],
        "shares": {r.model_version: r.weight for r in traffic.routes()},
        "captured": _captured_rows(bucket),
    }


def test_kill_9_then_up_brings_back_every_acknowledged_write(assembly_dir, tmp_path, monkeypatch):
    from sluice import aws

    state_dir = tmp_path / "state"
    state = _up(state_dir, assembly_dir, monkeypatch)
    try:
        env = aws.client("lambda").get_function_configuration(FunctionName=FUNCTION)["Environment"][
            "Variables"
        ]
        registry = ModelRegistry(
            table_name=env["SLUICE_REGISTRY_TABLE"], bucket_name=env["SLUICE_REGISTRY_BUCKET"]
        )
        traffic = EndpointTraffic(function_name=FUNCTION, model_name=MODEL, registry=registry, actor="tests")
        features = {
            "numeric": datasets.NUMERIC,
            "categorical": datasets.CATEGORICAL,
            "target": datasets.TARGET,
        }
        bundle = bundle_from_training(train(datasets.credit(600, seed=3), TrainingSpec(**features)))
        stream = aws.client("firehose").describe_delivery_stream(
            DeliveryStreamName=env["SLUICE_CAPTURE_STREAM"]
        )
        destination = stream["DeliveryStreamDescription"]["Destinations"][0]
        bucket = (
            destination.get("ExtendedS3DestinationDescription") or destination["S3DestinationDescription"]
        )["BucketARN"].split(":::")[-1]

        # Given 50 registrations, v1 serving and v2 beside it at 30 %
        for _ in range(REGISTRATIONS):
            registry.register(MODEL, bundle, lineage=Lineage())
        for version in (1, 2):
            registry.approve(MODEL, version, actor="tests")
        traffic.deploy(1)
        traffic.promote(1)
        traffic.deploy(2)
        traffic.shift(2, 0.3)
        # And 2,000 requests scored through the gateway, every one captured
        rows = datasets.credit(REQUESTS, seed=4).drop(columns=[datasets.TARGET])
        records = [{k: (None if v != v else v) for k, v in r.items()} for r in rows.to_dict("records")]
        served = _score(_gateway_url(state), records)
        assert sum(served.values()) == REQUESTS and set(served) == {1, 2}
        assert _wait_for_capture(bucket, REQUESTS) == REQUESTS
        before = _state_of_the_stage(registry, traffic, bucket)
        assert before == {
            "versions": list(range(1, REGISTRATIONS + 1)),
            "shares": {1: 0.7, 2: 0.3},
            "captured": REQUESTS,
        }
        lambda_versions = [
            v["Version"]
            for v in aws.client("lambda").list_versions_by_function(FunctionName=FUNCTION)["Versions"]
        ]

        # When the whole stack is killed with SIGKILL and brought up again
        _kill_stack(state_dir)
        state = _up(state_dir, assembly_dir, monkeypatch)

        # Then the 50 versions, the 2,000 capture records and the 30 % weight are back
        registry = ModelRegistry(
            table_name=env["SLUICE_REGISTRY_TABLE"], bucket_name=env["SLUICE_REGISTRY_BUCKET"]
        )
        traffic = EndpointTraffic(function_name=FUNCTION, model_name=MODEL, registry=registry, actor="tests")
        assert _state_of_the_stage(registry, traffic, bucket) == before
        after = [
            v["Version"]
            for v in aws.client("lambda").list_versions_by_function(FunctionName=FUNCTION)["Versions"]
        ]
        assert after == lambda_versions  # no version published twice
        assert registry.get(MODEL, version=2).status == "Approved"
        # And the restored stage serves and captures as before
        served = _score(_gateway_url(state), records[:4])
        assert set(served) <= {1, 2} and sum(served.values()) == 4

        # When it is stopped cleanly (the journal becomes a snapshot) and brought up again
        down = _sluice(state_dir, "down")
        assert down.returncode == 0, down.stderr
        assert (state_dir / "data" / "snapshot.log").is_file() and not (
            state_dir / "data" / "journal.log"
        ).exists()
        _up(state_dir, assembly_dir, monkeypatch)
        # Then it is all still there
        assert _wait_for_capture(bucket, REQUESTS + 4, timeout_s=5) == REQUESTS + 4
        assert {r.model_version: r.weight for r in traffic.routes()} == {1: 0.7, 2: 0.3}
        assert [r.version for r in registry.list_versions(MODEL)] == list(range(1, REGISTRATIONS + 1))
    finally:
        _sluice(state_dir, "down")
