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
# Attempts per batch shard (the first + retries), in the scoring code and the state machine's Retry.
BATCH_RETRY_ATTEMPTS = 3

# --- Endpoints ---
# Instances per scoring request (the API's request model and the handler both enforce it).
MAX_INSTANCES = 10_000
JSON_SCHEMA_DRAFT4 = "http://json-schema.org/draft-04/schema#"

# --- CloudWatch metric namespaces (the runtime publishes, the CDK app's alarms and dashboards read) ---
ENDPOINT_NAMESPACE = "Sluice/Endpoint"
DRIFT_NAMESPACE = "Sluice/Drift"
QUALITY_NAMESPACE = "Sluice/Quality"


def stage_bucket_name(purpose: str, *, stage: str, account: str, region: str) -> str:
    """``sluice-<stage>-<purpose>-<account>-<region>``: unique per account and region."""
    return f"sluice-{stage}-{purpose}-{account}-{region}"


def registry_table_name(stage: str) -> str:
    return f"sluice-{stage}-registry"


def batch_state_machine_name(stage: str, model: str, *, via_endpoint: bool = False) -> str:
    """The batch scoring pipeline of a model (``sluice batch run`` starts it by name)."""
    return f"sluice-{stage}-{model}-batch" + ("-via-endpoint" if via_endpoint else "")


def deployer_role_name(stage: str) -> str:
    return f"sluice-{stage}-deployer"


def promotion_role_name(stage: str) -> str:
    return f"sluice-{stage}-promotion"


def role_arn(account: str, role_name: str, *, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account}:role/{role_name}"
