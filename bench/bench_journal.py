"""What the local stage's write-ahead journal costs (``localaws.journal``): the same stage, journal off and on.

Prints JSON lines (see ``bench/_common.py``), each with the journal on as the value and the
journal off, measured in the same run, as the baseline (``ratio``):

* ``journal_gateway_p50_ms``: one-row ``POST /predict`` through the local gateway, signed,
  captured through Firehose (each capture object is journaled and fsynced);
* ``journal_s3_put_p50_ms`` / ``journal_dynamodb_put_p50_ms``: a small ``PutObject`` /
  ``PutItem`` through boto3 (each journaled and fsynced before its response);
* ``journal_up_seconds``: ``LocalAws.start`` again after those writes and a crash (the journal
  replayed), against a start with nothing to replay.

The modes alternate (off, on, off, on) so that both see the same machine. Run:
``python -m bench bench_journal`` (``BENCH_JOURNAL_N`` requests per path and round, default 300).
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench._common import emit, log, median, percentile, timings

ROOT = Path(__file__).resolve().parents[1]
BENCH = "journal"
MODEL = "credit-risk"
FUNCTION = f"sluice-dev-{MODEL}-endpoint"


def main() -> None:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    n = int(os.environ.get("BENCH_JOURNAL_N", "300"))
    samples: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
    with tempfile.TemporaryDirectory() as tmp:
        from app import build_app

        log("synthesizing the dev stage")
        build_app(context={"stage": "dev"}, outdir=f"{tmp}/cdk.out").synth()
        for round_ in range(2):
            for mode in ("off", "on"):
                log(f"round {round_ + 1}: journal {mode}")
                for path, values in _round(Path(tmp), mode, round_, n).items():
                    samples[mode].setdefault(path, []).extend(values)
    for path in samples["on"]:
        on, off = samples["on"][path], samples["off"][path]
        unit, scale = ("s", 1.0) if path == "up_seconds" else ("ms", 1000.0)
        emit(
            BENCH,
            f"journal_{path}",
            median(on) * scale,
            unit=unit,
            baseline=median(off) * scale,
            baseline_name="the same with the journal off",
            p99_on=round(percentile(on, 99) * scale, 3),
            p99_off=round(percentile(off, 99) * scale, 3),
            n=len(on),
        )


def _round(tmp: Path, mode: str, round_: int, n: int) -> dict[str, list[float]]:
    from localaws import LocalAws

    state_dir = tmp / f"state-{mode}-{round_}"
    aws = LocalAws.start(assembly_dir=tmp / "cdk.out", state_dir=state_dir, persist=mode == "on")
    try:
        measured = _writes(aws, n)
        measured["gateway_p50_ms"] = _gateway(aws, n)
    finally:
        if aws.store is not None:  # a crash: no snapshot, the next start replays the journal
            aws.store.close()
            aws.store = None
        aws.stop()
    t0 = time.perf_counter()
    LocalAws.start(assembly_dir=tmp / "cdk.out", state_dir=state_dir, persist=mode == "on").stop()
    measured["up_seconds"] = [time.perf_counter() - t0]
    return measured


def _writes(aws, n: int) -> dict[str, list[float]]:
    s3, ddb = aws.client("s3"), aws.client("dynamodb")
    bucket = aws.physical_id("Work", resource_type="AWS::S3::Bucket")
    table = aws.physical_id("RegistryTable", resource_type="AWS::DynamoDB::Table")
    counter = iter(range(10**9))

    def put_object() -> None:
        s3.put_object(Bucket=bucket, Key=f"bench/journal/{next(counter)}.json", Body=b'{"x": 1}' * 64)

    def put_item() -> None:
        i = str(next(counter))
        ddb.put_item(TableName=table, Item={"pk": {"S": f"bench#{i}"}, "sk": {"S": "x"}, "v": {"N": i}})

    return {
        "s3_put_p50_ms": timings(put_object, repeat=n, warmup=10),
        "dynamodb_put_p50_ms": timings(put_item, repeat=n, warmup=10),
    }


def _gateway(aws, n: int) -> list[float]:
    from localaws.auth import sign
    from sluice.models.packaging import bundle_from_training
    from sluice.models.training import TrainingSpec, train
    from sluice.registry.lineage import Lineage
    from sluice.registry.store import ModelRegistry
    from sluice.serving.traffic import EndpointTraffic
    from sluice_demo import datasets

    env = aws.client("lambda").get_function_configuration(FunctionName=FUNCTION)["Environment"]["Variables"]
    registry = ModelRegistry(
        table_name=env["SLUICE_REGISTRY_TABLE"], bucket_name=env["SLUICE_REGISTRY_BUCKET"]
    )
    spec = TrainingSpec(numeric=datasets.NUMERIC, categorical=datasets.CATEGORICAL, target=datasets.TARGET)
    version = registry.register(
        MODEL, bundle_from_training(train(datasets.credit(600, seed=1), spec)), lineage=Lineage()
    ).version
    registry.approve(MODEL, version, actor="bench")
    traffic = EndpointTraffic(function_name=FUNCTION, model_name=MODEL, registry=registry, actor="bench")
    traffic.deploy(version)
    traffic.promote(version)
    row = datasets.credit(1, seed=2).drop(columns=[datasets.TARGET]).to_dict("records")[0]
    body = json.dumps({"instances": [{k: (None if v != v else v) for k, v in row.items()}]}).encode()
    url = urlsplit(aws.gateway_url("EndpointRestApi") + "/predict")
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)

    def predict() -> None:
        headers = sign("POST", url.geturl(), body=body, headers={"Content-Type": "application/json"})
        connection.request("POST", url.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status

    try:
        return timings(predict, repeat=n, warmup=20)
    finally:
        connection.close()


if __name__ == "__main__":
    main()
