"""The drift job's fan-out: a Step Functions Distributed Map of sketching Lambdas, then a merge.

No business logic here: the steps are ``sluice.handlers.drift_fanout`` (``sluice.monitoring.fanout``).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.nag import acknowledge, distributed_map_child_rules, logical_id
from infra.constructs.registry import Registry
from infra.constructs.runtime import SluiceFunction
from infra.constructs.storage import bucket_in, physical_bucket_name
from infra.constructs.workflow import lambda_step, logged_state_machine, retry_transient


class DriftFanout(Construct):
    """One stage's drift state machine: a Distributed Map sketching groups of capture objects, then a merge.

    The scheduled drift job (``sluice.handlers.monitor``) plans each window. A window larger
    than one child's share is written under ``reports/drift-work/`` and started here with
    ``{"model", "plan_key", "items_key"}``: the Map reads ``items_key`` (ItemReader, one JSON
    item per child), each child sketches its objects and writes the sketches to S3, and the
    merge step compares, publishes and reports as the single-process job does. Small windows
    never come here.

    Parameters
    ----------
    registry
        The model registry (profiles, calibrations and registered metrics).
    capture_bucket
        Captured requests (``capture/``), and the work files and reports (``reports/``).
    role
        Execution role of the step function: the stage's ``monitor`` role, which the drift job
        runs as too, with its grants (registry read, capture read, reports read and write, metrics).
    state_machine_name
        Physical name, from which :attr:`state_machine_arn` is built without a reference (the
        drift job, run by the same role, starts it). Default ``sluice-drift``.
    max_concurrency
        Children sketching at once: the steps' reserved concurrency (``drift_fanout``). Default 10.
    retain_logs
        Keep the log groups when the stack is deleted.

    Attributes
    ----------
    function, map, merge, log_group, state_machine, state_machine_arn
        Everything created; ``state_machine_arn`` is a plain string (no token of the state machine).
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        registry: Registry,
        capture_bucket: s3.IBucket,
        role: iam.Role,
        state_machine_name: str = "sluice-drift",
        max_concurrency: int = 10,
        retain_logs: bool = False,
        log_execution_data: bool = False,
    ) -> None:
        super().__init__(scope, id)
        self._capture_source = capture_bucket
        self.function = self._build_function(registry, capture_bucket, role, retain_logs=retain_logs)
        self._build_state_machine(
            max_concurrency=max_concurrency,
            state_machine_name=state_machine_name,
            retain_logs=retain_logs,
            log_execution_data=log_execution_data,
        )
        self.state_machine_arn = cdk.Stack.of(self).format_arn(
            service="states",
            resource="stateMachine",
            resource_name=state_machine_name,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self._acknowledge()

    def _build_function(
        self, registry: Registry, capture_bucket: s3.IBucket, role: iam.Role, *, retain_logs: bool
    ) -> lambda_.Function:
        """The steps' function (``sluice.handlers.drift_fanout``), in the training image."""
        capture = bucket_in(self, capture_bucket)
        return SluiceFunction(
            self,
            "Steps",
            handler="drift_fanout",
            container="training",
            role=role,
            service="sluice-drift-fanout",
            memory_mb=2048,
            timeout_s=900,
            retain_logs=retain_logs,
            environment={
                **registry.environment,
                "SLUICE_CAPTURE_BUCKET": capture.bucket_name,
                "SLUICE_REPORTS_BUCKET": capture.bucket_name,
            },
        ).function

    def _build_state_machine(
        self, *, max_concurrency: int, state_machine_name: str, retain_logs: bool, log_execution_data: bool
    ) -> None:
        """Distributed Map (one child per item of ``$.items_key``) → merge; transient errors retried."""
        sketch = lambda_step(self, "SketchGroup", self.function)
        retry_transient(sketch)
        self.map = sfn.DistributedMap(
            self,
            "SketchGroups",
            max_concurrency=max_concurrency,
            item_reader=sfn.S3JsonItemReader(
                bucket=bucket_in(self, self._capture_source), key=sfn.JsonPath.string_at("$.items_key")
            ),
            # Children write their sketches to S3; the merge reads them from the plan.
            result_path=sfn.JsonPath.DISCARD,
        )
        self.map.item_processor(sketch)
        self.merge = lambda_step(
            self,
            "MergeAndPublish",
            self.function,
            sfn.TaskInput.from_object({"step": "merge", "plan_key": sfn.JsonPath.string_at("$.plan_key")}),
        )
        retry_transient(self.merge)
        self.log_group, self.state_machine = logged_state_machine(
            self,
            self.map.next(self.merge),
            timeout=cdk.Duration.hours(2),
            retain_logs=retain_logs,
            state_machine_name=state_machine_name,
            include_execution_data=log_execution_data,
        )

    def grant_start(self, grantee: iam.IGrantable) -> iam.Grant:
        """``states:StartExecution`` on this state machine, by its ARN string (no dependency cycle
        when ``grantee`` is the role the steps run as)."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["states:StartExecution"], resource_arns=[self.state_machine_arn]
        )

    def _acknowledge(self) -> None:
        rules = {
            f"AwsSolutions-IAM5[Resource::<{logical_id(self.function)}.Arn>:*]": "Step Functions invokes "
            "the step function by version or alias; CDK's LambdaInvoke grant adds the ':*' qualifier for that.",
            "AwsSolutions-IAM5[Resource::*]": "X-Ray tracing and CloudWatch Logs delivery of the state "
            "machine support only resource '*' (AWS documents no narrower resource).",
        }
        rules.update(distributed_map_child_rules(self.state_machine))
        bucket = physical_bucket_name(self._capture_source)
        rules[f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{bucket}/*]"] = (
            "The Distributed Map's ItemReader reads the run's items file under reports/drift-work/: "
            "CDK scopes the read to objects of the stage's capture bucket."
        )
        acknowledge(self.state_machine, rules)
