"""An ONNX graph end to end on the embedded local AWS: registered, approved, served by the zip endpoint.

The graph is written by skl2onnx from a pipeline fitted here; it is registered as it is (flavour
``onnx``), approved through the registry API by a session of the stage's approver role, deployed
to the stage's zip endpoint with no flavour given, and called through the local gateway. Its
answers are ONNX Runtime's own for the same rows.
"""

from __future__ import annotations

import http.client
import json
import math
from urllib.parse import urlsplit

import numpy as np
import onnxruntime as ort
import pytest
from botocore.credentials import Credentials
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from localaws.auth import sign
from sluice.models.imports import register_fitted
from sluice.registry.store import ModelRegistry
from sluice.serving.traffic import EndpointTraffic
from sluice_demo import datasets

pytestmark = pytest.mark.local

MODEL = "credit-risk"  # the stage's model: the gateway validates requests against its features
FUNCTION = f"sluice-dev-{MODEL}-endpoint"
NUMERIC, CATEGORICAL = list(datasets.NUMERIC), list(datasets.CATEGORICAL)


def post(url: str, body: bytes, credentials: Credentials | None = None) -> tuple[int, dict]:
    """One SigV4-signed POST (the developer's key unless ``credentials``): status and JSON body."""
    parts = urlsplit(url)
    headers = sign(
        "POST", url, body=body, headers={"Content-Type": "application/json"}, credentials=credentials
    )
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        connection.request("POST", parts.path, body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    return response.status, json.loads(raw) if raw else {}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """A fitted pipeline's ONNX graph, one input per feature, as skl2onnx writes it by default."""
    train = datasets.credit(2000, seed=21)
    numeric = Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
    prepare = ColumnTransformer(
        [("numeric", numeric, NUMERIC), ("categories", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)]
    )
    model = Pipeline([("prepare", prepare), ("model", LogisticRegression(max_iter=500))])
    model.fit(train[NUMERIC + CATEGORICAL], train[datasets.TARGET])
    types = [(c, FloatTensorType([None, 1])) for c in NUMERIC]
    types += [(c, StringTensorType([None, 1])) for c in CATEGORICAL]
    path = tmp_path_factory.mktemp("onnx") / "credit.onnx"
    path.write_bytes(convert_sklearn(model, initial_types=types, target_opset=18).SerializeToString())
    return path


@pytest.fixture(scope="module")
def approver(local_aws):
    """Credentials of a session of the stage's approver role, as STS issues them."""
    role = local_aws.client("iam").get_role(RoleName="sluice-dev-approver")["Role"]["Arn"]
    issued = local_aws.client("sts").assume_role(RoleArn=role, RoleSessionName="onnx-approver")["Credentials"]
    return Credentials(issued["AccessKeyId"], issued["SecretAccessKey"], issued["SessionToken"])


def test_an_onnx_graph_registers_deploys_to_the_zip_endpoint_and_serves_onnxruntimes_answers(
    local_aws, graph, approver
):
    lam = local_aws.client("lambda")
    env = lam.get_function_configuration(FunctionName=FUNCTION)["Environment"]["Variables"]
    assert env["SLUICE_MODEL_FLAVOUR"] == "onnx"  # the stage's endpoint is the zip function
    registry = ModelRegistry(
        table_name=env["SLUICE_REGISTRY_TABLE"], bucket_name=env["SLUICE_REGISTRY_BUCKET"]
    )
    # Given the graph registered as it is, with reference rows
    reference = datasets.credit(800, seed=22)
    record = register_fitted(registry, MODEL, graph, reference, target=datasets.TARGET)
    assert record.flavours == ("onnx",) and record.status == "PendingManualApproval"
    # When the approver role approves it through the registry API
    api = local_aws.gateway_url("RegistryApi") + f"/models/{MODEL}/versions/{record.version}/approve"
    status, body = post(api, json.dumps({"comment": "onnx graph checked"}).encode(), credentials=approver)
    assert status == 200, body
    assert registry.get(MODEL, version=record.version).status == "Approved"
    # And it is deployed with no flavour given, and promoted
    traffic = EndpointTraffic(function_name=FUNCTION, model_name=MODEL, registry=registry, actor="tests")
    assert traffic.deploy(record.version).flavour == "onnx"
    traffic.promote(record.version)
    # Then the gateway answers what ONNX Runtime answers for the graph on the same rows
    rows = datasets.credit(100, seed=23).drop(columns=[datasets.TARGET])
    instances = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in rows.to_dict("records")
    ]
    status, body = post(
        local_aws.gateway_url("EndpointRestApi") + "/predict", json.dumps({"instances": instances}).encode()
    )
    assert status == 200, body
    assert (body["model"], body["version"]) == (MODEL, record.version)
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    feeds = {c: rows[c].to_numpy(np.float32).reshape(-1, 1) for c in NUMERIC}
    feeds |= {c: rows[c].astype(object).to_numpy().reshape(-1, 1) for c in CATEGORICAL}
    labels, maps = session.run(None, feeds)
    assert body["predictions"] == labels.tolist()
    np.testing.assert_allclose(body["probabilities"], [[m[0], m[1]] for m in maps], rtol=0, atol=1e-6)
