"""The seed's lifecycle, end to end, on a running stage (the embedded local AWS in ``make demo``).

Eight steps, from the first model M1 to M2 running beside it:

1. train M1 with the training pipeline (Step Functions, training image, non-personal role);
2. its artifacts are registered; a person approves it and names it champion;
3. deploy M1 to the endpoint;
4. monitoring: baseline from the training partition, target from the test partition;
5. production traffic through the API gateway, captured;
6. drift is injected, the drift job's metric raises the alarm, the rule starts retraining;
7. M2 is registered PendingManualApproval, parent M1, with its retraining's comparison of M1 and
   M2 on one holdout;
8. a person reads M1 against M2 on the same holdout and approves M2 accordingly: it is deployed
   beside M1 at 10 %; only if it is better there does the canary shift all traffic to it and the
   version go on to the prod registry (:func:`sluice_demo.story.decide`).

Every step talks to the stage only through AWS APIs (boto3 against ``AWS_ENDPOINT_URL``) and
HTTP, exactly as it would against a deployed stage. :class:`Lifecycle` records figures and
timings per step, and a :class:`~sluice_demo.story.Timeline` of what happened when, for the summary
table (:mod:`sluice_demo.cli`) and the HTML lifecycle report (:mod:`sluice_demo.report`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from http.client import HTTPConnection
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from localaws.auth import sign
from sluice import aws
from sluice.errors import SluiceError
from sluice_demo.datasets import CATEGORICAL, NUMERIC, TARGET, credit, credit_spec
from sluice_demo.story import (
    CANARY_STEPS,
    TRIAL_WEIGHT,
    Comparison,
    Decision,
    Timeline,
    decide,
    side_by_side,
    trial_health,
)

if TYPE_CHECKING:
    import pandas as pd

    from sluice.registry.store import ModelRegistry
    from sluice.serving.traffic import EndpointTraffic

HUMAN = "demo-approver"  # the person who approves and deploys in the demo


@dataclass
class Step:
    number: int
    title: str
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Stage:
    """Names of the running stage that the lifecycle needs (from the deployed resources)."""

    model: str
    work_bucket: str
    capture_bucket: str
    retrain_state_machine_arn: str
    endpoint_function: str
    monitor_function: str
    gateway_url: str
    registry_table: str
    registry_bucket: str
    alarm_names: list[str]
    # The account the prod stage's registry lives in (cdk.json's prod:account); "" for the same one.
    prod_account: str = ""


class Lifecycle:
    """Run the lifecycle on a stage; ``on_step(step)`` is called when each step starts and ends."""

    # What the steps learn and pass on as they run (set by :meth:`run` and the steps).
    registry: ModelRegistry
    dataset: str
    data: pd.DataFrame
    shifted: pd.DataFrame
    holdout: pd.DataFrame
    started: datetime
    m1: int
    m2: int
    comparison: Comparison  # M1 against M2 on the same holdout (step 7)
    decision: Decision  # the person's call on M2, which follows the comparison (step 8)
    final_routes: list[dict[str, Any]]

    def __init__(
        self,
        stage: Stage,
        *,
        rows: int = 4_000,
        requests: int = 400,
        split_requests: int = 1_000,
        on_step: Callable[[Step, bool], None] | None = None,
        wait_s: float = 300.0,
    ) -> None:
        self.stage = stage
        self.rows = rows
        self.requests = requests
        self.split_requests = split_requests
        self.on_step = on_step or (lambda step, done: None)
        self.wait_s = wait_s
        self.steps: list[Step] = []
        self.request_ids: list[str] = []
        self.rows_sent = 0
        self.timeline = Timeline()

    # -- plumbing ------------------------------------------------------------------------------

    def _registry(self) -> ModelRegistry:
        from sluice.registry.store import ModelRegistry

        return ModelRegistry(table_name=self.stage.registry_table, bucket_name=self.stage.registry_bucket)

    def _run(self, number: int, title: str, body: Callable[[Step], None]) -> Step:
        step = Step(number, title)
        self.steps.append(step)
        self.timeline.step(number)
        self.on_step(step, False)
        started = time.perf_counter()
        body(step)
        step.seconds = time.perf_counter() - started
        self.on_step(step, True)
        return step

    def _wait_execution(self, arn: str) -> dict[str, Any]:
        sfn = aws.client("stepfunctions")
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            described = sfn.describe_execution(executionArn=arn)
            if described["status"] != "RUNNING":
                if described["status"] != "SUCCEEDED":
                    raise SluiceError(
                        f"execution {arn} ended {described['status']}: {described.get('cause', '')}"
                    )
                return json.loads(described["output"])
            time.sleep(0.5)
        raise SluiceError(f"execution {arn} did not finish within {self.wait_s:.0f} s")

    def _score(self, frame: pd.DataFrame, *, batch: int = 1) -> tuple[list[dict[str, Any]], list[float]]:
        """POST rows to the endpoint, ``batch`` rows per request, over one keep-alive connection."""
        url = urlsplit(self.stage.gateway_url)
        connection = HTTPConnection(url.hostname or "localhost", url.port, timeout=60)
        features = [c for c in frame.columns if c != "default"]
        records = json.loads(frame[features].to_json(orient="records"))
        responses: list[dict[str, Any]] = []
        latencies: list[float] = []
        try:
            for start in range(0, len(records), batch):
                body = json.dumps({"instances": records[start : start + batch]})
                began = time.perf_counter()
                headers = sign(
                    "POST",
                    f"{self.stage.gateway_url}/predict",
                    body=body,
                    headers={"Content-Type": "application/json"},
                )
                connection.request("POST", f"{url.path}/predict", body, headers)  # SigV4, as IAM auth wants
                reply = connection.getresponse()
                payload = json.loads(reply.read() or b"{}")
                latencies.append(time.perf_counter() - began)
                if reply.status != 200:
                    raise SluiceError(f"endpoint answered {reply.status}: {payload}")
                responses.append(payload)
                self.timeline.serve(payload.get("version"))
                self.request_ids.append(payload.get("request_id", ""))
                self.rows_sent += len(payload.get("predictions", []))
        finally:
            connection.close()
        return responses, latencies

    def _drift_check(self, window_minutes: float = 30.0) -> list[dict[str, Any]]:
        result = aws.client("lambda").invoke(
            FunctionName=self.stage.monitor_function,
            Payload=json.dumps(
                {"model": self.stage.model, "window_minutes": window_minutes, "concept": False}
            ),
        )
        body = json.loads(result["Payload"].read() or b"{}")
        if result.get("FunctionError") or "error" in body:
            raise SluiceError(f"drift job failed: {body}")
        return body["drift"]

    # -- the steps ----------------------------------------------------------------------------

    def run(self) -> list[Step]:
        """Run the eight steps in order; returns them with their figures and timings."""
        self.started = datetime.now(UTC)
        self.timeline = Timeline()
        self.registry = self._registry()
        self.dataset = f"s3://{self.stage.work_bucket}/datasets/{self.stage.model}/latest.parquet"
        self.data = credit(self.rows, seed=0)
        # The newer world: incomes down, debt and utilisation up (data drift), and utilisation
        # no longer says what it said (concept drift), so a model retrained on it can do better.
        self.shifted = credit(
            self.rows,
            seed=7,
            shift={"income": -0.8, "debt_ratio": 0.7, "utilisation": 0.6},
            effect_change={"utilisation": -0.5},
        )
        self._run(1, "Train M1 with the training pipeline", self._train_m1)
        self._run(2, "Register M1's artifacts; approve it", self._register_m1)
        self._run(3, "Deploy M1 to the endpoint", self._deploy_m1)
        self._run(4, "Monitoring: training baseline vs test partition", self._monitoring)
        self._run(5, "Production traffic through the gateway, captured", self._production_traffic)
        self._run(6, "Inject drift: alarm → rule → retraining", self._inject_drift)
        self._run(7, "M2 registered, pending approval; M1 vs M2 on one holdout", self._m2_registered)
        self.decision = decide(self.comparison)
        self._run(8, self.decision.title, self._approve_and_shift)
        return self.steps

    def _train_m1(self, step: Step) -> None:
        from sluice.models.training import TrainingSpec
        from sluice.pipelines.datasource import write_table

        write_table(self.data, self.dataset)
        spec = TrainingSpec(
            target=TARGET,
            numeric=NUMERIC,
            categorical=CATEGORICAL,
            estimator="sklearn.linear_model.LogisticRegression",
            hyperparameters={"C": 0.5, "max_iter": 500},
        )
        execution = {
            "model": self.stage.model,
            "data_uri": self.dataset,
            "run_id": "demo-m1",
            "spec": spec.to_dict(),
            "trigger": "demo",
        }
        arn = aws.client("stepfunctions").start_execution(
            stateMachineArn=self.stage.retrain_state_machine_arn, name="demo-m1", input=json.dumps(execution)
        )["executionArn"]
        state = self._wait_execution(arn)
        self.m1 = state["version"]
        # On M1's own holdout (training data); step 7 sets M1 against M2 on one newer holdout.
        step.figures.update(
            version=self.m1, rows=state["rows"], metrics_own_holdout=state["candidate_metrics"]
        )

    def _register_m1(self, step: Step) -> None:
        model = self.stage.model
        record = self.registry.approve(model, self.m1, actor=HUMAN, reason="demo: holdout metrics reviewed")
        self.registry.set_alias(model, "champion", self.m1, actor=HUMAN)
        step.figures.update(
            status=record.status,
            artifacts=len(record.artifacts),
            sha256={k: v["sha256"][:12] for k, v in sorted(record.artifacts.items())},
        )

    def _deploy_m1(self, step: Step) -> None:
        endpoint = self._traffic()
        endpoint.deploy(self.m1)
        endpoint.promote(self.m1)
        step.figures.update(routes=self._routes(endpoint))
        self.timeline.route(step.figures["routes"])

    def _monitoring(self, step: Step) -> None:
        from sluice.models.training import split

        _, holdout = split(self.data, credit_spec())
        self.holdout = holdout
        responses, _ = self._score(holdout.head(self.requests))
        runs = self._drift_check()
        self.timeline.drift_window(4, "test partition", runs)
        step.figures.update(
            baseline="training partition (profile.json in the registry)",
            target_rows=len(responses),
            dataset_drift_share=[r.get("dataset_drift_share") for r in runs],
        )

    def _production_traffic(self, step: Step) -> None:
        responses, latencies = self._score(self.holdout.tail(self.requests), batch=1)
        served = Counter(r["version"] for r in responses)
        step.figures.update(
            requests=len(responses),
            p50_ms=round(sorted(latencies)[len(latencies) // 2] * 1000, 2),
            served=dict(served),
            captured=self._captured(),
        )

    def _inject_drift(self, step: Step) -> None:
        from sluice.pipelines.datasource import write_table

        write_table(self.shifted, self.dataset)  # the newest labelled window that retraining will use
        self._score(self.shifted.head(self.requests), batch=10)
        runs = self._drift_check(window_minutes=5)
        self.timeline.drift_window(6, "shifted traffic", runs)
        step.figures.update(
            dataset_drift_share=[r.get("dataset_drift_share") for r in runs],
            drifted=[r.get("drifted_features") for r in runs],
            alarm=self._wait_alarm(),
        )

    def _m2_registered(self, step: Step) -> None:
        self.m2 = self._wait_version(self.registry, after=self.m1)
        record = self.registry.get(self.stage.model, version=self.m2)
        # The retraining scored M1 and M2 on the same holdout rows; M2's own metrics and M1's
        # from step 1 come from different holdouts and are not compared.
        report = json.loads(self.registry.fetch(self.stage.model, self.m2, "reports/comparison.json"))
        self.comparison = Comparison.from_report(report, challenger_version=self.m2)
        step.figures.update(
            version=self.m2,
            status=record.status,
            parent=record.parent_version,
            same_holdout=self.comparison.figures(),
            m2_better=self.comparison.better,
        )

    def _approve_and_shift(self, step: Step) -> None:
        """M2 beside M1 at 10 %; the canary and prod only if the person's decision says so."""
        self.registry.approve(self.stage.model, self.m2, actor=HUMAN, reason=self.decision.reason)
        endpoint = self._traffic()
        endpoint.deploy(self.m2)
        endpoint.shift(self.m2, TRIAL_WEIGHT)
        split = self._routes(endpoint)
        self.timeline.route(split)
        trial = self.shifted.head(self.split_requests)
        responses, _ = self._score(trial)
        share = sum(1 for r in responses if r["version"] == self.m2) / len(responses)
        both = side_by_side(responses, trial[TARGET].tolist())
        self.timeline.canary_step(
            TRIAL_WEIGHT, trial_health(both.get(f"v{self.m2}")), ran=True, note="beside M1"
        )
        step.figures.update(
            decision=self.decision.verdict, split=split, observed_share_m2=round(share, 3), side_by_side=both
        )
        if self.decision.promote:
            self._canary(step, endpoint)
        else:
            for weight in (*CANARY_STEPS, 1.0):
                self.timeline.canary_step(weight, None, ran=False, note="not run: M2 is not better")
            step.figures.update(routes=self._routes(endpoint), prod="not promoted: M2 is not better than M1")
        self.final_routes = [asdict(r) for r in endpoint.routes()]

    def _canary(self, step: Step, endpoint: EndpointTraffic) -> None:
        """Shift 25 % then 50 % to M2, judging its own metrics while traffic flows; promote it if healthy.

        CodeDeploy's linear shift in AWS; ``sluice.serving.canary`` does it locally. Only a canary
        that took M2 to all traffic goes on to the prod registry.
        """

        def flow(seconds: float) -> None:  # while the canary waits, traffic reaches the new weights
            self.timeline.route(self._routes(endpoint))
            self._score(self.shifted.sample(200, random_state=1))

        def judged(canary_step: dict[str, Any]) -> None:
            note = "; ".join(canary_step["breaches"])
            self.timeline.canary_step(canary_step["weight"], canary_step["health"], ran=True, note=note)

        canary = self._traffic(sleep=flow)
        result = canary.canary(self.m2, steps=CANARY_STEPS, interval_s=0, on_step=judged)
        routes = self._routes(endpoint)
        self.timeline.route(routes)
        promoted = result.outcome == "promoted"
        self.timeline.canary_step(1.0, None, ran=promoted, note=result.outcome)
        step.figures.update(
            canary=result.outcome, canary_steps=[s["weight"] for s in result.steps], routes=routes
        )
        step.figures.update(
            prod=self._promote(self.registry) if promoted else f"not promoted: {result.reason}"
        )

    # -- helpers ------------------------------------------------------------------------------

    def _traffic(self, **kwargs: Any) -> EndpointTraffic:
        from sluice.serving.traffic import EndpointTraffic

        return EndpointTraffic(
            function_name=self.stage.endpoint_function,
            model_name=self.stage.model,
            registry=self._registry(),
            actor=HUMAN,
            **kwargs,
        )

    @staticmethod
    def _routes(endpoint: EndpointTraffic) -> dict[str, float]:
        return {f"v{r.model_version}": r.weight for r in endpoint.routes()}

    def _captured(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Rows captured for M1 so far, and whether every request id sent came back in capture.

        The endpoint sends capture after each response, so the last requests' records may
        still be on their way: read again until they are all there or ``timeout_s`` passes.
        """
        from sluice.serving.capture_reader import iter_capture

        deadline = time.monotonic() + timeout_s
        while True:
            now = datetime.now(UTC)
            request_ids: set[str] = set()
            rows = 0
            for chunk in iter_capture(
                self.stage.capture_bucket,
                model=self.stage.model,
                version=self.m1,
                start=self.started - timedelta(minutes=1),
                end=now + timedelta(minutes=1),
            ):
                rows += len(chunk)
                request_ids.update(r["request_id"] for r in chunk)
            if request_ids >= set(self.request_ids) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        return {
            "rows": rows,
            "sent": self.rows_sent,
            "request_ids_match": request_ids == set(self.request_ids),
        }

    def _wait_alarm(self) -> str:
        cloudwatch = aws.client("cloudwatch")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            alarms = cloudwatch.describe_alarms(AlarmNames=self.stage.alarm_names)["MetricAlarms"]
            firing = [a["AlarmName"] for a in alarms if a["StateValue"] == "ALARM"]
            self.timeline.alarm_threshold = next((a.get("Threshold") for a in alarms), None)
            if firing:
                return firing[0]
            time.sleep(0.5)
        raise SluiceError(f"no drift alarm of {self.stage.alarm_names} reached ALARM within 60 s")

    def _wait_version(self, registry: ModelRegistry, *, after: int) -> int:
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            newer = [r.version for r in registry.list_versions(self.stage.model) if r.version > after]
            if newer:
                return max(newer)
            time.sleep(1.0)
        raise SluiceError(f"no version after v{after} was registered within {self.wait_s:.0f} s")

    def _promote(self, registry: ModelRegistry) -> dict[str, Any]:
        """Prod pulls M2 into its registry (pending), then a prod approver approves it.

        In AWS the pull is prod's promotion function (``sluice --stage prod promote``); locally
        the prod stage is only its registry, so the pull runs here under the prod promotion
        role's name, with the same code (:func:`sluice.registry.promotion.pull`).
        """
        from sluice.names import approver_role_name, promotion_role_name, role_arn
        from sluice.registry.promotion import StageRegistry, pull
        from sluice.registry.store import create_storage

        account = aws.client("sts").get_caller_identity()["Account"]
        region = aws.client("sts").meta.region_name
        source = StageRegistry("dev", account, region)
        target = StageRegistry("prod", self.stage.prod_account or account, region)
        # The prod stage's stateful stack holds its registry; locally it is created here, in the
        # prod account, as CloudFormation's execution role there would.
        deployer = f"arn:aws:iam::{target.account}:role/cdk-hnb659fds-cfn-exec-role-{target.account}-{region}"
        with aws.assumed_role(deployer, session_name="sluice-demo-prod-registry", region=region):
            create_storage(target.table_name, target.bucket_name, region=region)
        puller = role_arn(target.account, promotion_role_name("prod"))
        with aws.assumed_role(puller, session_name="sluice-prod-promotion", region=region):
            prod = target.registry()
            promoted = pull(
                self.stage.model, self.m2, source=source, target=prod, actor=prod.caller()
            ).to_dict()
        approver = role_arn(target.account, approver_role_name("prod"))
        with aws.assumed_role(approver, session_name=HUMAN, region=region):
            prod = target.registry()
            approved = prod.approve(
                self.stage.model,
                promoted["to"]["version"],
                actor=prod.caller(),
                reason=f"demo: reviewed the pull of dev v{self.m2}",
            )
        promoted["to"].update(account=target.account, status=approved.status, approved_by=approved.decided_by)
        if target.account == account:
            promoted["note"] = "no prod account configured: the prod registry is in the dev account"
        return promoted
