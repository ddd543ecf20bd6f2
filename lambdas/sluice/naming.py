"""Physical names of a stage's resources, shared by the CDK app and the runtime.

Names are fixed per stage so that another account can name them literally: the prod promotion
role trusts the dev deployer role by name, and ``sluice promote`` finds the prod registry from
the stage's account and region alone.
"""

from __future__ import annotations


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
