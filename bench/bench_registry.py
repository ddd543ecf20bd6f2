"""Registry latency on the embedded local AWS: alias -> records -> verified artifacts -> model in memory.

By default the synthesized dev stage runs on :class:`localaws.LocalAws` (moto's threaded
server, with the registry table and bucket created from the templates, and the registry API
served by its local gateway and a warm Lambda worker). ``SLUICE_BENCH_REGISTRY=moto`` skips the
synthesis and uses a bare moto threaded server with the same table layout instead (no API).
Either way, every AWS call is a real HTTP round trip through boto3.

Metrics (JSON lines, see ``bench/_common.py``), each with a baseline measured in the same run:

* ``load_by_alias_p50`` / ``_p95``: ``registry.load(name, alias="champion")``, against reading
  the same artifact files from local disk and building the same objects (``joblib.load`` and JSON
  parsing), so the ratio is the registry's overhead: DynamoDB reads, S3 GETs, hashing;
* ``resolve_alias_p50``: ``registry.get(name, alias=...)`` (two consistent reads), same baseline;
* ``load_onnx_by_alias_p50``: the zip flavour's load, against the sklearn flavour's;
* ``api_describe_version_p50`` (local AWS only): ``GET /models/{name}/versions/{v}`` through the
  local API gateway and the registry API Lambda, against the same ``registry.get`` in-process.

Run: ``python -m bench bench_registry`` (``SLUICE_BENCH_REPEAT`` timed calls, default 40).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from bench._common import emit, log, median, percentile, timings

ROOT = Path(__file__).resolve().parents[1]
BENCH = "registry"
REPEAT = int(os.environ.get("SLUICE_BENCH_REPEAT", "40"))
REGION = "eu-west-1"


def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    if os.environ.get("SLUICE_BENCH_REGISTRY", "local") == "moto":
        _on_moto()
    else:
        _on_local_aws()


def _on_local_aws() -> None:
    from app import build_app
    from localaws import LocalAws

    with tempfile.TemporaryDirectory() as tmp:
        log("synthesizing the app and starting the local AWS")
        build_app(outdir=f"{tmp}/cdk.out").synth()
        t0 = time.perf_counter()
        with LocalAws.start(assembly_dir=f"{tmp}/cdk.out", state_dir=f"{tmp}/state") as aws:
            log(f"local AWS up in {time.perf_counter() - t0:.1f} s")
            table = aws.physical_id("RegistryTable", resource_type="AWS::DynamoDB::Table")
            bucket = aws.physical_id("RegistryArtifacts", resource_type="AWS::S3::Bucket")
            _measure(table, bucket, server="localaws.LocalAws", api_url=aws.gateway_url("RegistryApi"))


def _on_moto() -> None:
    from moto.server import ThreadedMotoServer

    from localaws import dynamodb as moto_patches
    from sluice import aws
    from sluice.registry.store import create_storage

    os.environ["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"] = REGION
    moto_patches.apply()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    previous = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    aws.reset_clients()
    try:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
        table, bucket = "bench-registry", "bench-registry-artifacts"
        create_storage(table, bucket)
        _measure(table, bucket, server="moto ThreadedMotoServer", api_url=None)
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = previous
        aws.reset_clients()


def _measure(table: str, bucket: str, *, server: str, api_url: str | None) -> None:
    import joblib

    from sluice.models.features import Preprocessor
    from sluice.models.packaging import bundle_from_training
    from sluice.models.schema import FeatureSchema
    from sluice.models.training import train
    from sluice.registry.bundle import (
        MODEL_ARTIFACT,
        PREPROCESSING_ARTIFACTS,
        PROFILE_ARTIFACT,
        SCHEMA_ARTIFACT,
        SPEC_ARTIFACT,
    )
    from sluice.registry.lineage import Lineage
    from sluice.registry.store import ModelRegistry
    from sluice_demo.datasets import credit, credit_spec

    registry = ModelRegistry(table_name=table, bucket_name=bucket)
    log("training the credit model (5000 rows) and registering it")
    result = train(credit(5000, seed=0), credit_spec(max_iter=500))
    bundle = bundle_from_training(result)
    lineage = Lineage(data_uri="sluice:datasets/credit?rows=5000&seed=0", data_rows=5000)
    record = registry.register("credit", bundle, lineage=lineage)
    registry.approve("credit", record.version, actor="bench")
    registry.set_alias("credit", "champion", record.version, actor="bench")
    common = {
        "repeat": REPEAT,
        "artifacts": len(bundle.artifacts),
        "artifacts_bytes": sum(len(b) for b in bundle.artifacts.values()),
        "server": server,
    }

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
            return estimator, preprocessor, schema, profile, json.loads((root / SPEC_ARTIFACT).read_bytes())

        disk = timings(from_disk, repeat=REPEAT)

    loaded = timings(lambda: registry.load("credit", alias="champion"), repeat=REPEAT)
    resolved = timings(lambda: registry.get("credit", alias="champion"), repeat=REPEAT)
    emit(
        BENCH,
        "load_by_alias_p50",
        median(loaded),
        unit="s",
        baseline=median(disk),
        baseline_name="local_disk_p50",
        **common,
    )
    emit(
        BENCH,
        "load_by_alias_p95",
        percentile(loaded, 95),
        unit="s",
        baseline=percentile(disk, 95),
        baseline_name="local_disk_p95",
        **common,
    )
    emit(
        BENCH,
        "resolve_alias_p50",
        median(resolved),
        unit="s",
        baseline=median(disk),
        baseline_name="local_disk_p50",
        server=server,
    )
    if "model.onnx" in record.artifacts:
        onnx = timings(lambda: registry.load("credit", alias="champion", flavour="onnx"), repeat=REPEAT)
        emit(
            BENCH,
            "load_onnx_by_alias_p50",
            median(onnx),
            unit="s",
            baseline=median(loaded),
            baseline_name="load_sklearn_by_alias_p50",
            server=server,
        )
    if api_url:
        from localaws.auth import sign

        parts = urlsplit(api_url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        path = f"{parts.path}/models/credit/versions/{record.version}"

        def describe() -> dict:
            connection.request("GET", path, headers=sign("GET", f"{api_url}/models/credit/versions/{record.version}"))
            response = connection.getresponse()
            body = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"GET {path} answered {response.status}: {body}")
            return body

        assert describe()["version"] == record.version
        api = timings(describe, repeat=REPEAT)
        direct = timings(lambda: registry.get("credit", version=record.version), repeat=REPEAT)
        connection.close()
        emit(
            BENCH,
            "api_describe_version_p50",
            median(api),
            unit="s",
            baseline=median(direct),
            baseline_name="registry_get_in_process_p50",
            server=server,
        )


if __name__ == "__main__":
    main()
