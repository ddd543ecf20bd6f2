"""Threat: a compromised endpoint, batch step or retraining of one model reads or writes another.

Each model's endpoint, batch steps and retraining steps run as roles of their own, and
:meth:`infra.constructs.registry.Registry.grant_read` / ``grant_write`` with ``model`` let them
read (and the retraining register) only that model's partition of the registry table
(``dynamodb:LeadingKeys``), its artifacts and its audit events. Each attack is a request to the policy simulator over the synthesized templates (moto
evaluates no IAM); ``tests/unit/test_registry_scope.py`` checks that serving and batch ask for
nothing outside their model, so the narrower grants break neither in AWS.
"""

from __future__ import annotations

import pytest

from sluice.names import (
    REGISTRY_INDEX_PARTITION,
    audit_bucket_name,
    audit_event_prefix,
    registry_artifact_prefix,
    registry_partition_key,
    retrain_role_name,
    role_arn,
    stage_bucket_name,
)
from tests.infra.conftest import (
    SESSION_MODELS,
    model_prefix,
    stacks,  # noqa: F401  (the session's synthesized stacks)
)
from tests.security.test_iam_policies import STAGES, App, app  # noqa: F401

#: Logical-id stems of the roles that run one model's code (endpoint, both batch pipelines' steps);
#: the retraining steps' role has a fixed name (``retrain_role_name``).
MODEL_ROLES = ("EndpointRole", "BatchStepsRole", "BatchViaEndpointStepsRole")
READS = ("dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:ConditionCheckItem")


def _roles(on: App, stage: str, model: str) -> list[str]:
    stems = tuple(f"{stage.capitalize()}-Service-{model_prefix(model)}{stem}" for stem in MODEL_ROLES)
    found = [arn for arn in on.roles(stage) if arn.rsplit("/", 1)[-1].startswith(stems)]
    assert len(found) == len(MODEL_ROLES), found
    retrain = role_arn(on.env(stage)[0], retrain_role_name(stage, model))
    assert retrain in on.roles(stage)
    return [*found, retrain]


def _buckets(on: App, stage: str) -> tuple[str, str]:
    account, region = on.env(stage)
    artifacts = stage_bucket_name("artifacts", stage=stage, account=account, region=region)
    return artifacts, audit_bucket_name(artifacts)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("model", SESSION_MODELS)
def test_a_models_roles_read_its_own_registry_entries(app, stage, model):  # noqa: F811
    artifacts, audit = _buckets(app, stage)
    own = {"dynamodb:LeadingKeys": [registry_partition_key(model)]}
    for role in _roles(app, stage, model):
        for action in READS:
            assert app.sim.allowed(role, action, app.table(stage), own), (role, action)
        key = f"{registry_artifact_prefix(model)}{'a' * 64}/model.joblib"
        assert app.sim.allowed(role, "s3:GetObject", f"arn:aws:s3:::{artifacts}/{key}"), role
        events = audit_event_prefix(model)
        assert app.sim.allowed(role, "s3:GetObject", f"arn:aws:s3:::{audit}/{events}1-x.json"), role
        assert app.sim.allowed(role, "s3:ListBucket", f"arn:aws:s3:::{audit}", {"s3:prefix": events}), role


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("model", SESSION_MODELS)
def test_a_models_roles_cannot_read_another_models_entries(app, stage, model):  # noqa: F811
    artifacts, audit = _buckets(app, stage)
    found = []
    for other in (m for m in SESSION_MODELS if m != model):
        theirs = registry_partition_key(other)
        for role in _roles(app, stage, model):
            # the other model's partition, alone or among its own, and a Scan (no leading key)
            for keys in ([theirs], [registry_partition_key(model), theirs]):
                for action in READS:
                    if app.sim.allowed(role, action, app.table(stage), {"dynamodb:LeadingKeys": keys}):
                        found.append(f"{role}: {action} {keys}")
            if app.sim.allowed(role, "dynamodb:Scan", app.table(stage)):
                found.append(f"{role}: dynamodb:Scan")
            key = f"{registry_artifact_prefix(other)}{'a' * 64}/model.joblib"
            if app.sim.allowed(role, "s3:GetObject", f"arn:aws:s3:::{artifacts}/{key}"):
                found.append(f"{role}: s3:GetObject {key}")
            events = audit_event_prefix(other)
            if app.sim.allowed(role, "s3:GetObject", f"arn:aws:s3:::{audit}/{events}1-x.json"):
                found.append(f"{role}: s3:GetObject {events}")
            if app.sim.allowed(role, "s3:ListBucket", f"arn:aws:s3:::{audit}", {"s3:prefix": events}):
                found.append(f"{role}: s3:ListBucket {events}")
    assert found == []


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("model", SESSION_MODELS)
def test_a_models_retraining_registers_only_that_model(app, stage, model):  # noqa: F811
    artifacts, audit = _buckets(app, stage)
    role = role_arn(app.env(stage)[0], retrain_role_name(stage, model))
    ordinary = ["pk", "sk", "metrics"]
    writes = ("dynamodb:PutItem", "dynamodb:UpdateItem")
    # It writes its own partition and its entry in the models index, its artifacts and events
    for keys in ([registry_partition_key(model)], [REGISTRY_INDEX_PARTITION]):
        for action in writes:
            context = {"dynamodb:LeadingKeys": keys, "dynamodb:Attributes": ordinary}
            assert app.sim.allowed(role, action, app.table(stage), context), (action, keys)
    own = f"{registry_artifact_prefix(model)}{'a' * 64}/model.joblib"
    assert app.sim.allowed(role, "s3:PutObject", f"arn:aws:s3:::{artifacts}/{own}")
    assert app.sim.allowed(role, "s3:PutObject", f"arn:aws:s3:::{audit}/{audit_event_prefix(model)}1-x.json")
    # And nothing of another model's
    found = []
    for other in (m for m in SESSION_MODELS if m != model):
        for action in writes:
            context = {
                "dynamodb:LeadingKeys": [registry_partition_key(other)],
                "dynamodb:Attributes": ordinary,
            }
            if app.sim.allowed(role, action, app.table(stage), context):
                found.append(f"{action} {other}")
        for bucket, key in (
            (artifacts, f"{registry_artifact_prefix(other)}{'a' * 64}/model.joblib"),
            (audit, f"{audit_event_prefix(other)}1-x.json"),
        ):
            if app.sim.allowed(role, "s3:PutObject", f"arn:aws:s3:::{bucket}/{key}"):
                found.append(f"s3:PutObject {bucket}/{key}")
    assert found == []
