"""The model endpoint end to end on the embedded local AWS (dev stage from the synthesized templates).

Deploy v1 and score through the local gateway; v2 at 10 %; promote; rollback; a canary of a version
that always errors rolls back by itself; a fuzz of bad payloads gets only 4xx; capture matches.

The registered versions are shared by the module; each test routes the live alias itself (see
:func:`serving_only`), so any one of them runs alone (``-k promot``) or in any order.
"""

from __future__ import annotations

import http.client
import json
import math
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localaws.auth import sign
from sluice.errors import NotFound
from sluice.models.packaging import bundle_from_training
from sluice.models.training import TrainingSpec, train
from sluice.registry.lineage import Lineage
from sluice.registry.store import ModelRegistry
from sluice.serving.canary import HealthPolicy
from sluice.serving.capture_reader import iter_capture
from sluice.serving.traffic import EndpointTraffic
from sluice_demo import datasets

pytestmark = pytest.mark.local

MODEL = "credit-risk"  # the stage's model (cdk.json sluice:model), whose schema the gateway validates
FUNCTION = f"sluice-dev-{MODEL}-endpoint"


class Client:
    """One keep-alive HTTP connection to the local gateway's /predict."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path.rstrip("/") + "/predict"
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def post(self, body: bytes | str) -> tuple[int, dict]:
        data = body.encode() if isinstance(body, str) else body
        for attempt in range(2):
            try:
                url = f"http://{self.host}:{self.port}{self.path}"
                headers = sign("POST", url, body=data, headers={"Content-Type": "application/json"})
                self.connection.request("POST", self.path, body=data, headers=headers)
                response = self.connection.getresponse()
                raw = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                if attempt:
                    raise
                self.connection.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"raw": raw.decode(errors="replace")}
        return response.status, payload

    def score(self, rows: list[dict]) -> tuple[int, dict]:
        return self.post(json.dumps({"instances": rows}))


def clean(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


@pytest.fixture(scope="module")
def stage(local_aws):
    """Three approved versions of the stage's model in the local registry: v1, v2 (healthy), v3 (broken).

    Registered once per module, not deployed: each test routes the endpoint's alias as it needs.
    """
    lam = local_aws.client("lambda")
    env = lam.get_function_configuration(FunctionName=FUNCTION)["Environment"]["Variables"]
    registry = ModelRegistry(
        table_name=env["SLUICE_REGISTRY_TABLE"], bucket_name=env["SLUICE_REGISTRY_BUCKET"]
    )
    features = {"numeric": datasets.NUMERIC, "categorical": datasets.CATEGORICAL, "target": datasets.TARGET}
    v1 = train(datasets.credit(3000, seed=1), TrainingSpec(**features, hyperparameters={"C": 1.0}))
    v2 = train(datasets.credit(3000, seed=2), TrainingSpec(**features, hyperparameters={"C": 0.1}))
    for result in (v1, v2):
        record = registry.register(MODEL, bundle_from_training(result), lineage=Lineage())
        registry.approve(MODEL, record.version, actor="tests")
    # v3 "always errors": its model.onnx is not an ONNX graph, so every request is a 503
    broken = bundle_from_training(v2)
    broken.artifacts["model.onnx"] = b"this is not an ONNX graph"
    v3 = registry.register(MODEL, broken, lineage=Lineage())
    registry.approve(MODEL, v3.version, actor="tests")
    rows = [clean(r) for r in datasets.credit(200, seed=9).drop(columns=[datasets.TARGET]).to_dict("records")]
    return {"registry": registry, "rows": rows, "env": env}


@pytest.fixture
def traffic(stage):
    """The endpoint's traffic controls, new for each test (a test may inject its own sleep)."""
    return EndpointTraffic(
        function_name=FUNCTION, model_name=MODEL, registry=stage["registry"], actor="tests"
    )


@pytest.fixture
def client(local_aws):
    client = Client(local_aws.gateway_url("EndpointRestApi"))
    yield client
    client.connection.close()


def shares(traffic) -> dict:
    return {r.model_version: r.weight for r in traffic.routes()}


def deployed(traffic, version: int) -> None:
    """``version`` has a published Lambda version (the newest one is reused, as the alias would)."""
    try:
        traffic.lambda_version_of(version)
    except NotFound:
        traffic.deploy(version)


def serving_only(traffic, version: int) -> None:
    """The live alias sends 100 % to ``version``, whatever an earlier test left on it."""
    deployed(traffic, version)
    if shares(traffic) != {version: 1.0}:
        traffic.promote(version)
    assert shares(traffic) == {version: 1.0}


def served_versions(client: Client, rows: list[dict], n: int) -> Counter:
    seen: Counter = Counter()
    for i in range(n):
        status, body = client.score([rows[i % len(rows)]])
        assert status == 200, body
        seen[body["version"]] += 1
    return seen


def test_deploy_v1_and_score_through_the_gateway(stage, traffic, client):
    rows = stage["rows"]
    # Given v1 deployed and promoted on the live alias
    traffic.deploy(1)
    traffic.promote(1)
    assert shares(traffic) == {1: 1.0}
    # When a row and a batch are posted to /predict
    status, body = client.score(rows[:1])
    assert status == 200, body
    assert body["model"] == MODEL and body["version"] == 1 and body["request_id"]
    assert body["predictions"][0] in (0, 1) and len(body["probabilities"][0]) == 2
    status, body = client.score(rows[:50])
    assert status == 200 and len(body["predictions"]) == 50


def test_v2_at_10_percent_gets_8_to_12_percent_of_2000_requests(stage, traffic, client):
    # Given v1 serving everything
    serving_only(traffic, 1)
    # When v2 is deployed beside it at 10 %
    traffic.deploy(2)
    traffic.shift(2, 0.1)
    # Then 8-12 % of 2,000 requests reach v2
    assert shares(traffic) == {1: 0.9, 2: 0.1}
    seen = served_versions(client, stage["rows"], 2000)
    assert set(seen) == {1, 2}
    assert 0.08 <= seen[2] / 2000 <= 0.12, seen


def test_promote_sends_everything_to_v2(stage, traffic, client):
    # Given v1 serving and v2 beside it at 10 %
    serving_only(traffic, 1)
    deployed(traffic, 2)
    traffic.shift(2, 0.1)
    # When v2 is promoted
    traffic.promote(2)
    # Then it serves everything and is the champion
    assert served_versions(client, stage["rows"], 200) == Counter({2: 200})
    assert stage["registry"].aliases(MODEL)["champion"] == 2


def test_rollback_sends_everything_back_to_v1(stage, traffic, client):
    # Given v1 serving, v2 beside it at 10 %, then v2 promoted
    serving_only(traffic, 1)
    deployed(traffic, 2)
    traffic.shift(2, 0.1)
    traffic.promote(2)
    # When the promotion is rolled back
    traffic.rollback()
    # Then v1 serves everything again, and the audit trail tells the story
    assert served_versions(client, stage["rows"], 200) == Counter({1: 200})
    kinds = [e["kind"] for e in stage["registry"].history(MODEL)]
    assert kinds[-1] == "rolled_back" and "promoted" in kinds and "traffic" in kinds


def test_canary_of_an_always_erroring_version_rolls_back_by_itself(stage, traffic, client):
    rows = stage["rows"]
    # Given v1 serving everything and the broken v3 deployed
    serving_only(traffic, 1)
    traffic.deploy(3)
    statuses: Counter = Counter()
    started = datetime.now(UTC) - timedelta(seconds=1)

    def serve_traffic_while_waiting(seconds: float) -> None:
        # What live traffic does during a canary step: 60 requests, about half to v3 at 50 %
        for i in range(60):
            status, _ = client.score([rows[i]])
            statuses[status] += 1
        # EMF log lines reach CloudWatch through the worker's log shipper: wait until v3's
        # errors are all there, as the canary's next look at the metrics expects.
        deadline = time.monotonic() + 60
        while traffic.health(3, start=started).errors < statuses[503] and time.monotonic() < deadline:
            time.sleep(0.2)

    # When a canary of v3 runs while traffic flows (this test's own traffic object waits this way)
    traffic._sleep = serve_traffic_while_waiting
    result = traffic.canary(3, steps=(0.5, 0.9), interval_s=0, policy=HealthPolicy(max_errors=0))
    # Then it rolled back after the first step on v3's own errors, and v1 serves everything again
    assert statuses[503] > 0 and statuses[200] > 0 and set(statuses) <= {200, 503}
    assert result.outcome == "rolled_back" and "server error" in result.reason, result
    assert [s["weight"] for s in result.steps] == [0.5]
    assert shares(traffic) == {1: 1.0}
    assert served_versions(client, rows, 50) == Counter({1: 50})
    assert stage["registry"].history(MODEL)[-1]["kind"] == "rolled_back"


# --- bad input ---------------------------------------------------------------------------------

FEATURES = (*datasets.NUMERIC, *datasets.CATEGORICAL)
not_a_number = st.one_of(st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=2), st.just({}))


@st.composite
def bad_payload(draw) -> bytes:
    """A request body that is wrong in exactly one generated way."""
    row = {
        "income": 50_000.0, "debt_ratio": 0.3, "age": 40.0, "credit_lines": 4.0, "utilisation": 0.5,
        "late_payments": 0.0, "tenure": 5.0, "loan_amount": 10_000.0, "region": "north", "product": "loan",
    }  # fmt: skip
    kind = draw(
        st.sampled_from(
            ["text", "not_object", "no_instances", "empty", "not_list", "record", "type", "category",
             "missing", "extra_field", "infinite", "huge_int"]
        )
    )  # fmt: skip
    if kind == "text":
        text = draw(st.text(min_size=1, max_size=30))
        try:
            json.loads(text)
            text = "{" + text  # make sure it is not JSON
        except ValueError:
            pass
        return text.encode("utf-8", "surrogatepass")
    if kind == "not_object":
        return json.dumps(
            draw(st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers())))
        ).encode()
    if kind == "no_instances":
        return json.dumps({draw(st.sampled_from(["instance", "rows", "data"])): [row]}).encode()
    if kind == "empty":
        return b'{"instances": []}'
    if kind == "not_list":
        return json.dumps(
            {"instances": draw(st.one_of(st.just(row), st.integers(), st.text(max_size=4)))}
        ).encode()
    if kind == "record":
        return json.dumps(
            {"instances": [row, draw(st.one_of(st.integers(), st.text(max_size=4), st.none()))]}
        ).encode()
    feature = draw(st.sampled_from(datasets.NUMERIC))
    if kind == "type":
        row[feature] = draw(not_a_number)
    elif kind == "category":
        row[draw(st.sampled_from(datasets.CATEGORICAL))] = draw(
            st.one_of(
                st.text(max_size=6).filter(
                    lambda s: s not in {"north", "south", "east", "west", "card", "loan", "mortgage"}
                ),
                st.integers(),
            )
        )
    elif kind == "missing":
        del row[draw(st.sampled_from(datasets.CATEGORICAL))]
    elif kind == "extra_field":
        return json.dumps({"instances": [row], draw(st.sampled_from(["model", "version", "x"])): 1}).encode()
    elif kind == "infinite":
        return (
            json.dumps({"instances": [row]})
            .replace(f'"{feature}": ', f'"{feature}": 1e999, "_": ', 1)
            .encode()
        )
    elif kind == "huge_int":
        return json.dumps({"instances": [{**row, feature: 10**400}]}).encode()
    return json.dumps({"instances": [row]}).encode()


def test_fuzzed_bad_payloads_are_all_4xx_and_the_worker_survives(stage, traffic, client, local_aws):
    # Given v1 serving everything
    serving_only(traffic, 1)
    statuses: Counter = Counter()
    bodies: list[dict] = []

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(payload=bad_payload())
    def send(payload: bytes) -> None:
        status, body = client.post(payload)
        statuses[status] += 1
        if status != 400 or "errors" in body:
            bodies.append(body)
        assert 400 <= status < 500, (payload[:200], status, body)

    send()
    # Then >= 1,000 bad payloads got 4xx and no 5xx; some reached the function and named the field
    assert sum(statuses.values()) >= 1000 and all(400 <= s < 500 for s in statuses)
    named = [b for b in bodies if b.get("errors")]
    assert named and all(e["field"] for b in named for e in b["errors"])
    # And the warm worker of the serving version is alive and still scores
    live = traffic.routes()[0].lambda_version
    workers = local_aws.runtime.workers(FUNCTION, live)
    assert workers and all(w.alive for w in workers)
    status, body = client.score(stage["rows"][:1])
    assert status == 200 and body["version"] == 1


def test_every_scored_request_is_captured_with_its_request_id(stage, traffic, client):
    rows = stage["rows"]
    # Given v1 serving everything
    serving_only(traffic, 1)
    start = datetime.now(UTC) - timedelta(minutes=1)
    sent: dict[str, int] = {}
    for i in range(25):
        status, body = client.score(rows[i : i + 1 + i % 3])
        assert status == 200
        sent[body["request_id"]] = len(body["predictions"])
    # Then the capture bucket holds one record per scored row, with the responses' request ids
    bucket = stage["env"].get("SLUICE_CAPTURE_BUCKET")
    if bucket is None:  # the endpoint writes through Firehose; the stream delivers to the capture bucket
        from sluice import aws

        stream = stage["env"]["SLUICE_CAPTURE_STREAM"]
        described = aws.client("firehose").describe_delivery_stream(DeliveryStreamName=stream)
        destination = described["DeliveryStreamDescription"]["Destinations"][0]
        arn = (
            destination.get("ExtendedS3DestinationDescription") or destination["S3DestinationDescription"]
        )["BucketARN"]
        bucket = arn.split(":::")[-1]
    # (sent after each response by the endpoint's extension: the last ones may still be on the way)
    deadline = time.monotonic() + 30
    while True:
        captured: Counter = Counter()
        for chunk in iter_capture(
            bucket, model=MODEL, version=1, start=start, end=datetime.now(UTC) + timedelta(minutes=1)
        ):
            for record in chunk:
                if record["request_id"] in sent:
                    captured[record["request_id"]] += 1
        if dict(captured) == sent or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert dict(captured) == sent
