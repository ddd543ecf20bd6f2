"""Embedded local AWS: ``local up`` time and the warm per-invoke overhead of the worker runtime.

Prints JSON lines (see ``bench/_common.py``):

* ``up_seconds_cold`` / ``_warm``: ``LocalAws.start`` on a freshly synthesized app (server,
  bootstrap, assets, stacks, gateways), first with an empty asset-zip cache, then with it
  filled; its phases as extra fields; baseline = the synthesis itself;
* ``invoke_ms`` per path, each against calling the same handler in-process (``ratio``):
  in-process ``LambdaRuntime.invoke`` (worker round trip), boto3 ``lambda.invoke`` through
  the moto server, and ``GET`` through the local API gateway (keep-alive connection).

Run: ``python -m bench bench_local`` (``BENCH_LOCAL_N`` invocations per path, default 300).
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

from bench._common import emit, log, median, percentile, timings

ROOT = Path(__file__).resolve().parents[1]
BENCH = "local"


def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    for path in (ROOT, ROOT / "tests" / "local" / "fixtures"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    n = int(os.environ.get("BENCH_LOCAL_N", "300"))
    with tempfile.TemporaryDirectory() as tmp:
        from app import build_app

        log("synthesizing the app")
        t0 = time.perf_counter()
        build_app(outdir=f"{tmp}/cdk.out").synth()
        synth_s = time.perf_counter() - t0

        from localaws import LocalAws

        # Cold: directory assets zipped (the scoring layer is 136 MB); warm: zips cached by hash.
        os.environ["SLUICE_LOCAL_ASSET_CACHE"] = f"{tmp}/asset-cache"
        for kind in ("cold", "warm"):
            log(f"local up ({kind} asset cache)")
            t0 = time.perf_counter()
            aws = LocalAws.start(assembly_dir=f"{tmp}/cdk.out", state_dir=f"{tmp}/state-{kind}")
            up_s = time.perf_counter() - t0
            emit(
                BENCH,
                f"up_seconds_{kind}",
                up_s,
                unit="s",
                baseline=synth_s,
                baseline_name="cdk synth (in-process)",
                resources=len(aws.resources),
                **{f"phase_{k}": round(v, 3) for k, v in aws.timings.__dict__.items()},
            )
            if kind == "cold":
                aws.stop()
        with aws:
            _invokes(aws, n)


def _invokes(aws, n: int) -> None:
    import tiny_handler

    from tests.local.conftest import create_tiny_function

    name = create_tiny_function(aws)
    event = {"x": 1}
    context = SimpleNamespace(aws_request_id="bench", get_remaining_time_in_millis=lambda: 30_000)
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    direct = timings(lambda: tiny_handler.lambda_handler(event, context), repeat=n * 10)
    baseline_ms = median(direct) * 1000

    payload = json.dumps(event)
    lam = aws.client("lambda")
    alias = lam.create_alias(
        FunctionName=name, Name="live", FunctionVersion=lam.publish_version(FunctionName=name)["Version"]
    )
    api = aws.client("apigateway")
    api_id = api.create_rest_api(name="bench")["id"]
    root = next(r["id"] for r in api.get_resources(restApiId=api_id)["items"] if r["path"] == "/")
    resource = api.create_resource(restApiId=api_id, parentId=root, pathPart="{x}")["id"]
    api.put_method(restApiId=api_id, resourceId=resource, httpMethod="GET", authorizationType="NONE")
    api.put_integration(
        restApiId=api_id,
        resourceId=resource,
        httpMethod="GET",
        type="AWS_PROXY",
        integrationHttpMethod="POST",
        uri=f"arn:aws:apigateway:{aws.region}:lambda:path/2015-03-31/functions/{alias['AliasArn']}/invocations",
    )
    api.create_deployment(restApiId=api_id, stageName="bench")
    url = urlsplit(aws.gateway_url(api_id))
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)

    def via_gateway() -> None:
        conn.request("GET", f"{url.path}/1")
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status

    paths = {
        "runtime_in_process": lambda: aws.invoke(name, event),
        "boto3_lambda_invoke": lambda: lam.invoke(FunctionName=name, Payload=payload)["Payload"].read(),
        "api_gateway_get": via_gateway,
    }
    for path, fn in paths.items():
        samples = timings(fn, repeat=n, warmup=10)
        value_ms = median(samples) * 1000
        emit(
            BENCH,
            f"invoke_ms_{path}",
            value_ms,
            unit="ms",
            baseline=baseline_ms,
            baseline_name="handler called in-process",
            p95_ms=round(percentile(samples, 95) * 1000, 3),
            overhead_ms=round(value_ms - baseline_ms, 3),
            n=n,
        )


if __name__ == "__main__":
    main()
