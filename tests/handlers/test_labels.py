"""The labels handler: POST /labels through API Gateway, and label files dropped in S3."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from sluice.handlers import labels

EVENTS = Path(__file__).resolve().parents[1] / "events"
REGION = "eu-west-1"
CAPTURE = "monitor-capture"


@dataclass
class Context:
    function_name: str = "labels"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:labels"
    aws_request_id: str = "lambda-request"


def event(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


@pytest.fixture
def s3(monkeypatch):
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=CAPTURE, CreateBucketConfiguration={"LocationConstraint": REGION})
        monkeypatch.setenv("SLUICE_CAPTURE_BUCKET", CAPTURE)
        monkeypatch.setenv("SLUICE_LABEL_MODELS", "credit")
        yield client


def stored(s3) -> list[dict]:
    out = []
    for item in s3.list_objects_v2(Bucket=CAPTURE, Prefix="labels/model=").get("Contents", []):
        assert item["Key"].startswith("labels/model=credit/dt=")
        out += [
            json.loads(x) for x in s3.get_object(Bucket=CAPTURE, Key=item["Key"])["Body"].read().splitlines()
        ]
    return out


def test_post_labels_is_accepted_and_stored(s3):
    response = labels.lambda_handler(event("labels_post"), Context())
    assert response["statusCode"] == 202
    assert json.loads(response["body"]) == {"model": "credit", "accepted": 2}
    assert [(x["request_id"], x["row"], x["label"]) for x in stored(s3)] == [("req-1", 0, 1), ("req-1", 1, 0)]


def test_base64_bodies_are_decoded(s3):
    request = event("labels_post")
    request["body"] = base64.b64encode(request["body"].encode()).decode()
    request["isBase64Encoded"] = True
    assert labels.lambda_handler(request, Context())["statusCode"] == 202


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "must be an object"),
        ('{"labels": [{"request_id": "a", "label": 1}]}', "'model'"),
        ('{"model": "credit"}', "'labels' must be a non-empty list"),
        ('{"model": "credit", "labels": [{"request_id": "a"}]}', "labels[0]: 'label' is missing"),
        ('{"model": "credit", "labels": [{"request_id": 5, "label": 1}]}', "labels[0]: 'request_id'"),
    ],
)
def test_bad_requests_get_400_naming_the_field(s3, body, message):
    request = dict(event("labels_post"), body=body)
    response = labels.lambda_handler(request, Context())
    assert response["statusCode"] == 400
    assert message in json.loads(response["body"])["error"]
    assert stored(s3) == []


def test_too_many_labels_in_one_request_is_a_400(s3):
    many = [{"request_id": str(i), "label": 0} for i in range(labels.MAX_LABELS + 1)]
    request = dict(event("labels_post"), body=json.dumps({"model": "credit", "labels": many}))
    response = labels.lambda_handler(request, Context())
    assert response["statusCode"] == 400 and "'labels'" in json.loads(response["body"])["error"]


def test_a_csv_dropped_in_s3_is_ingested_from_the_s3_notification(s3):
    s3.put_object(
        Bucket=CAPTURE, Key="labels/incoming/credit/day 1.csv", Body=b"request_id,label\nr1,1\nr2,0\n"
    )
    result = labels.lambda_handler(event("labels_s3_put"), Context())
    assert result == {"files": {"labels/incoming/credit/day 1.csv": 2}}
    assert sorted(x["request_id"] for x in stored(s3)) == ["r1", "r2"]


def test_a_json_lines_file_from_the_eventbridge_event_is_ingested_and_bad_files_reported(s3):
    s3.put_object(
        Bucket=CAPTURE, Key="labels/incoming/credit/day2.jsonl", Body=b'{"request_id": "r9", "label": 1}\n'
    )
    assert labels.lambda_handler(event("labels_eventbridge_s3"), Context()) == {
        "files": {"labels/incoming/credit/day2.jsonl": 1}
    }
    s3.put_object(Bucket=CAPTURE, Key="labels/incoming/credit/day2.jsonl", Body=b"garbage\n")
    (message,) = labels.lambda_handler(event("labels_eventbridge_s3"), Context())["files"].values()
    assert "line 1 is not JSON" in message


def test_the_zip_labels_function_and_capture_import_without_the_data_stack():
    # The labels function is a zip with only boto3 and Powertools; capture runs in the zip endpoint
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'pandas', 'numpy', 'scipy', 'sklearn', 'matplotlib', 'pyarrow'}:\n"
        "            raise ImportError(f'{name} is not in the zip')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import sluice.handlers.labels, sluice.serving.capture, sluice.serving.capture_reader\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
