"""Registry load latency: alias -> records -> sha256-verified artifacts -> model in memory.

Runs against moto's threaded server (the HTTP server the embedded local AWS uses, with the same
DynamoDB serialisation patch), so every call is a real HTTP round trip through boto3. The
baseline, measured in the same run, reads the same artifact files from local disk and builds
the same objects (``joblib.load`` + JSON parsing), so the ratio is the registry's overhead:
the DynamoDB reads, the S3 GETs and the hashing.

``python -m bench bench_registry``; prints one JSON line per metric (see ``bench/_common.py``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import urllib.request
from pathlib import Path

from bench._common import emit, log, median, percentile, timings

BENCH = "registry"
REPEAT = int(os.environ.get("SLUICE_BENCH_REPEAT", "40"))
TABLE = "bench-registry"
BUCKET = "bench-registry-artifacts"
REGION = "eu-west-1"


def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"] = REGION
    from moto.server import ThreadedMotoServer

    from sluice import aws
    from sluice.local import moto_patches

    moto_patches.apply()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    previous = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    aws.reset_clients()
    try:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
        _run()
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = previous
        aws.reset_clients()


def _run() -> None:
    import joblib

    from sluice import aws
    from sluice.datasets import CATEGORICAL, NUMERIC, TARGET, credit
    from sluice.features import Preprocessor
    from sluice.registry import (
        MODEL_ARTIFACT,
        PREPROCESSING_ARTIFACTS,
        PROFILE_ARTIFACT,
        SCHEMA_ARTIFACT,
        SPEC_ARTIFACT,
        Lineage,
        ModelBundle,
        ModelRegistry,
    )
    from sluice.schema import FeatureSchema
    from sluice.training import TrainingSpec, train

    ddb, s3 = aws.client("dynamodb"), aws.client("s3")
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    registry = ModelRegistry(table_name=TABLE, bucket_name=BUCKET)

    log("training the credit model (5000 rows) and registering it")
    spec = TrainingSpec(
        target=TARGET, numeric=NUMERIC, categorical=CATEGORICAL, hyperparameters={"max_iter": 500}
    )
    result = train(credit(5000, seed=0), spec)
    bundle = ModelBundle.from_training(result)
    lineage = Lineage(data_uri="sluice:datasets/credit?rows=5000&seed=0", data_rows=5000)
    record = registry.register("credit", bundle, lineage=lineage)
    registry.approve("credit", record.version, actor="bench")
    registry.set_alias("credit", "champion", record.version, actor="bench")
    artifact_bytes = sum(len(b) for b in bundle.artifacts.values())

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, body in bundle.artifacts.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(body)

        def from_disk() -> object:
            estimator = joblib.load(root / MODEL_ARTIFACT)
            preprocessor = Preprocessor.from_artifacts(
                {k: json.loads((root / p).read_bytes()) for k, p in PREPROCESSING_ARTIFACTS.items()}
            )
            schema = FeatureSchema.from_dict(json.loads((root / SCHEMA_ARTIFACT).read_bytes()))
            profile = json.loads((root / PROFILE_ARTIFACT).read_bytes())
            spec_ = json.loads((root / SPEC_ARTIFACT).read_bytes())
            return estimator, preprocessor, schema, profile, spec_

        baseline = timings(from_disk, repeat=REPEAT)

    def load() -> object:
        return registry.load("credit", alias="champion")

    def resolve() -> object:
        return registry.get("credit", alias="champion")

    loaded = timings(load, repeat=REPEAT)
    resolved = timings(resolve, repeat=REPEAT)
    common = {"repeat": REPEAT, "artifacts_bytes": artifact_bytes, "server": "moto ThreadedMotoServer (HTTP)"}
    base = median(baseline)
    emit(
        BENCH,
        "load_by_alias_p50",
        median(loaded),
        unit="s",
        baseline=base,
        baseline_name="local_disk_p50",
        **common,
    )
    emit(
        BENCH,
        "load_by_alias_p95",
        percentile(loaded, 95),
        unit="s",
        baseline=percentile(baseline, 95),
        baseline_name="local_disk_p95",
        **common,
    )
    emit(
        BENCH, "resolve_alias_p50", median(resolved), unit="s", baseline=base, baseline_name="local_disk_p50"
    )
    if "model.onnx" in registry.get("credit", alias="champion").artifacts:
        onnx = timings(lambda: registry.load("credit", alias="champion", flavour="onnx"), repeat=REPEAT)
        emit(
            BENCH,
            "load_onnx_by_alias_p50",
            median(onnx),
            unit="s",
            baseline=median(loaded),
            baseline_name="load_sklearn_by_alias_p50",
            repeat=REPEAT,
        )


if __name__ == "__main__":
    main()
