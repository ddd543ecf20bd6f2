"""Names and limits shared by the CDK app and the runtime: the one module ``infra`` imports.

It imports nothing (standard library included), so ``cdk synth`` loads no runtime dependency.

Physical names are fixed per stage so that another account can name them literally: the prod
promotion role trusts the dev deployer role by name, and ``sluice promote`` finds the prod
registry from the stage's account and region alone.
"""

from __future__ import annotations

# --- Step Functions ---
SUCCEEDED, FAILED = "SUCCEEDED", "FAILED"
# The retraining state machine's steps, in order (one function each).
RETRAINING_STEPS = ("preprocess", "train", "evaluate", "register")
#: What the retraining's train step stages under ``retraining/<model>/<run_id>/``: the candidate
#: (a pickle or a skops file, which the evaluate and register steps load) and, for a train step
#: outside Lambda, the state it hands back. Only the model's train role may write them (the work
#: bucket's policy, :func:`staged_train_keys`).
CANDIDATE_FILES = ("candidate.joblib", "candidate.skops")
TRAIN_OUTPUT_FILE = "train-output.json"
# Attempts per batch shard (the first + retries), in the scoring code and the state machine's Retry.
BATCH_RETRY_ATTEMPTS = 3

# --- Endpoints ---
# Instances per scoring request (the API's request model and the handler both enforce it).
MAX_INSTANCES = 10_000
JSON_SCHEMA_DRAFT4 = "http://json-schema.org/draft-04/schema#"
# Labels per ``POST /labels`` request (the API's request model and the handler both enforce it).
MAX_LABELS = 10_000

# --- CloudWatch metric namespaces (the runtime publishes, the CDK app's alarms and dashboards read) ---
ENDPOINT_NAMESPACE = "Sluice/Endpoint"
DRIFT_NAMESPACE = "Sluice/Drift"
QUALITY_NAMESPACE = "Sluice/Quality"


def stage_bucket_name(purpose: str, *, stage: str, account: str, region: str) -> str:
    """``sluice-<stage>-<purpose>-<account>-<region>``: unique per account and region."""
    return f"sluice-{stage}-{purpose}-{account}-{region}"


def registry_table_name(stage: str) -> str:
    return f"sluice-{stage}-registry"


#: The registry table's partition listing every model (one item per model, sort key its partition).
REGISTRY_INDEX_PARTITION = "MODELS"


def registry_partition_key(model: str) -> str:
    """The registry table's partition key of ``model``'s items (versions, aliases, events):
    a model's serving and batch roles may read only this partition (``dynamodb:LeadingKeys``)."""
    return f"MODEL#{model}"


def registry_artifact_prefix(model: str) -> str:
    """Where ``model``'s artifacts live in the registry bucket (content-addressed below it)."""
    return f"artifacts/{model}/"


def audit_event_prefix(model: str) -> str:
    """Where ``model``'s audit events live in the stage's audit bucket."""
    return f"events/{model}/"


def batch_state_machine_name(stage: str, model: str, *, via_endpoint: bool = False) -> str:
    """The batch scoring pipeline of a model (``sluice batch run`` starts it by name)."""
    return f"sluice-{stage}-{model}-batch" + ("-via-endpoint" if via_endpoint else "")


def staged_train_keys(model: str) -> tuple[str, ...]:
    """Key patterns (``*`` for the run id) of what only ``model``'s train step may write."""
    return tuple(f"retraining/{model}/*/{name}" for name in (*CANDIDATE_FILES, TRAIN_OUTPUT_FILE))


def retrain_role_name(stage: str, model: str) -> str:
    """The role a model's retraining steps run as (its train step too, when that runs in Lambda)."""
    return f"sluice-{stage}-{model}-retrain"


def train_task_role_name(stage: str, model: str) -> str:
    """The role a model's train step runs as on Fargate or SageMaker (fits 64 characters)."""
    return f"sluice-{stage}-{model}-train"


def deployer_role_name(stage: str) -> str:
    return f"sluice-{stage}-deployer"


def promotion_role_name(stage: str) -> str:
    """The role of the prod-side promotion function, which pulls approved versions from dev."""
    return f"sluice-{stage}-promotion"


def registry_api_role_name(stage: str) -> str:
    """The registry API function's role: the only principal the approval key lets sign."""
    return f"sluice-{stage}-registry-api"


def approver_role_name(stage: str) -> str:
    """The only role the registry API lets approve or reject, assumed by people who approve."""
    return f"sluice-{stage}-approver"


def promotion_function_name(stage: str) -> str:
    """The prod-side function that pulls an approved dev version into the stage's registry."""
    return f"sluice-{stage}-promotion"


#: Version-item attributes only the approval path writes. Registration leaves them out (a version
#: without ``status`` is pending), and the CDK app denies every other registry writer a
#: PutItem/UpdateItem that names one of them (``dynamodb:Attributes``).
APPROVAL_ATTRIBUTES = (
    "status",
    "decided_at",
    "decided_by",
    "decision_reason",
    "approval_signature",
    "approval_key",
)


# --- Registry trust: signing keys and the audit store, derived from the registry's own names ---
def manifest_key_alias(table_name: str) -> str:
    """KMS alias of the SIGN_VERIFY key that signs each version's manifest at registration."""
    return f"alias/{table_name}-manifest"


def approval_key_alias(table_name: str) -> str:
    """KMS alias of the SIGN_VERIFY key that signs approvals (only the approval path may use it)."""
    return f"alias/{table_name}-approval"


def audit_bucket_name(artifacts_bucket: str) -> str:
    """The Object Lock (compliance) bucket of a registry's audit trail.

    ``sluice-<stage>-artifacts-<account>-<region>`` gives ``sluice-<stage>-audit-<account>-<region>``
    (:func:`stage_bucket_name` with purpose ``audit``); any other name gets ``-audit`` appended.
    """
    if artifacts_bucket.startswith("sluice-") and "-artifacts-" in artifacts_bucket:
        return artifacts_bucket.replace("-artifacts-", "-audit-", 1)
    return f"{artifacts_bucket}-audit"


def role_arn(account: str, role_name: str, *, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account}:role/{role_name}"


# --- Stage discovery: the stacks of a stage and the outputs the CLI reads from them ---
#: CloudFormation output name → the environment variable the runtime and the CLI read it from.
#: ``infra/stage.py`` declares these outputs; ``sluice --stage STAGE`` reads them from the
#: stage's stacks (in AWS) or from the running local stack's state file (locally).
STAGE_OUTPUTS = {
    "RegistryTable": "SLUICE_REGISTRY_TABLE",
    "RegistryBucket": "SLUICE_REGISTRY_BUCKET",
    "CaptureBucket": "SLUICE_CAPTURE_BUCKET",
    "WorkBucket": "SLUICE_WORK_BUCKET",
    "CaptureStream": "SLUICE_CAPTURE_STREAM",
    "RetrainStateMachineArn": "SLUICE_RETRAIN_STATE_MACHINE_ARN",
    "BatchStateMachineArn": "SLUICE_BATCH_STATE_MACHINE_ARN",
    "EndpointFunction": "SLUICE_ENDPOINT_FUNCTION",
    "EndpointUrl": "SLUICE_ENDPOINT_URL",
    "RegistryApiUrl": "SLUICE_REGISTRY_API_URL",
    "ModelName": "SLUICE_STAGE_MODEL",
    # Every model of the stage, the default (ModelName) first, as compact JSON:
    # {"<model>": {"url": endpoint URL, "function": endpoint function, "batch": batch state
    # machine ARN, "retrain": retraining state machine ARN}, ...}.
    "Models": "SLUICE_STAGE_MODELS",
}


def stage_stack_names(stage: str) -> tuple[str, str]:
    """The stateful and the service stack of a stage (``Dev-Stateful``, ``Dev-Service``)."""
    construct_id = stage.capitalize()
    return f"{construct_id}-Stateful", f"{construct_id}-Service"
