"""Threats of the trust chain (issue 16), performed as requests against the synthesized app's IAM.

moto does not evaluate IAM, so each "attack" is a request to the policy simulator
(:mod:`tests.security.iam_sim`) over the templates of both stages: the roles of the
templates, plus hypothetical principals (an intruder or an administrator of an account, with
whatever identity policy the test gives them and whatever session tags it claims).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from sluice.names import (
    APPROVAL_ATTRIBUTES,
    approval_key_alias,
    approver_role_name,
    audit_bucket_name,
    promotion_role_name,
    registry_table_name,
    retrain_role_name,
    stage_bucket_name,
    stage_stack_names,
)
from tests.infra.conftest import stacks  # noqa: F401  (the session's synthesized stacks)
from tests.security.iam_sim import Simulator
from tests.security.iam_sim_cfn import StackInput, simulator_from_stacks

STAGES = ("dev", "prod")
EVERYTHING = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
# Parameters a caller chooses: the attacker tries each (kms:Sign takes any algorithm of the key).
SIGNING = [
    {"kms:SigningAlgorithm": algorithm, "kms:MessageType": kind}
    for algorithm, kind in itertools.product(
        ["ECDSA_SHA_256", "ECDSA_SHA_384", "RSASSA_PSS_SHA_256", "RSASSA_PKCS1_V1_5_SHA_256"],
        ["RAW", "DIGEST"],
    )
]
# Session tags and source identity an attacker may give its own session.
SESSIONS = [{}] + [
    {"aws:PrincipalTag/sluice-duty": duty, "sts:SourceIdentity": "mallory"}
    for duty in ("deployer", "approver", "promotion", "training")
]
# Item attributes of a registry write: an ordinary one, and one that sets a version's status.
ATTRIBUTE_SETS = (["pk", "sk", "metrics"], ["pk", "sk", "status"])
# Trust-policy condition keys that tie a non-service principal to a person, a duty or a role.
TRUST_CONDITION_KEYS = ("aws:principaltag/", "sts:sourceidentity", "sts:externalid", "aws:principalarn")
#: Roles that may be assumed by a non-service principal without such a condition: role → reason.
TRUST_EXCEPTIONS: dict[str, str] = {}


class App:
    """The simulator over every stack, and what the tests look up in the templates."""

    def __init__(self, by_name: dict) -> None:
        # Each template read once (a StackArtifact parses its file on every access).
        self.stacks = {n: StackInput(n, s.account, s.region, s.template) for n, s in by_name.items()}
        self.sim, self.resolver = simulator_from_stacks(self.stacks.values())

    def env(self, stage: str) -> tuple[str, str]:
        stateful = self.stacks[stage_stack_names(stage)[0]]
        return stateful.account, stateful.region

    def roles(self, stage: str) -> list[str]:
        return [r.arn for r in self.sim.roles_of(self.env(stage)[0])]

    def table(self, stage: str) -> str:
        account, region = self.env(stage)
        return f"arn:aws:dynamodb:{region}:{account}:table/{registry_table_name(stage)}"

    def buckets(self, stage: str) -> list[str]:
        names = []
        for stack in stage_stack_names(stage):
            for logical_id, r in self.stacks[stack].template["Resources"].items():
                if r["Type"] == "AWS::S3::Bucket":
                    names.append(self.resolver.physical_name(stack, logical_id))
        return names

    def keys(self, stage: str) -> list[str]:
        return [
            self.resolver.get_att(stack, logical_id, "Arn")
            for stack in stage_stack_names(stage)
            for logical_id, r in self.stacks[stack].template["Resources"].items()
            if r["Type"] == "AWS::KMS::Key"
        ]

    def key_by_alias(self, stage: str, alias: str) -> str | None:
        account, region = self.env(stage)
        for stack in stage_stack_names(stage):
            for r in self.stacks[stack].template["Resources"].values():
                if r["Type"] == "AWS::KMS::Alias" and r["Properties"]["AliasName"] == alias:
                    target = str(self.resolver.resolve(stack, r["Properties"]["TargetKeyId"]))
                    return (
                        target
                        if target.startswith("arn:")
                        else f"arn:aws:kms:{region}:{account}:key/{target}"
                    )
        return None

    def approval_route(self, stage: str) -> tuple[str, str] | None:
        """The registry API's approve route ARN (any model, version 3) and the function behind it."""
        _, service = stage_stack_names(stage)
        for r in self.stacks[service].template["Resources"].values():
            props = r.get("Properties", {})
            if r["Type"] != "AWS::Lambda::Permission" or "SourceArn" not in props:
                continue
            source = str(self.resolver.resolve(service, props["SourceArn"]))
            if source.endswith("/POST/models/*/versions/*/approve") and "test-invoke-stage" not in source:
                route = source.replace("/*/versions/*/", "/credit-risk/versions/3/")
                return route, str(self.resolver.resolve(service, props["FunctionName"]))
        return None

    def function_role(self, stage: str, function_arn: str) -> str:
        _, service = stage_stack_names(stage)
        for logical_id, r in self.stacks[service].template["Resources"].items():
            if r["Type"] == "AWS::Lambda::Function" and self.resolver.get_att(service, logical_id, "Arn") == (
                function_arn
            ):
                return str(self.resolver.resolve(service, r["Properties"]["Role"]))
        raise AssertionError(f"no function {function_arn}")

    def approval_path(self, stage: str) -> set[str]:
        """The approver role and the role of the function behind the approve route."""
        account, _ = self.env(stage)
        path = {f"arn:aws:iam::{account}:role/{approver_role_name(stage)}"}
        route = self.approval_route(stage)
        if route:
            path.add(self.function_role(stage, route[1]))
        return path


@pytest.fixture
def app(stacks) -> App:  # noqa: F811
    """A fresh simulator per test: tests add hypothetical principals to it."""
    return App(stacks)


def _writes(sim: Simulator, principal: str, app: App, stage: str) -> Iterator[str]:
    """Every write of ``stage``'s data that ``principal`` is allowed (an attack per request)."""
    for bucket in app.buckets(stage):
        for key in ("x", "artifacts/credit-risk/abc/model.joblib", "events/e.json"):
            if sim.allowed(principal, "s3:PutObject", f"arn:aws:s3:::{bucket}/{key}"):
                yield f"s3:PutObject {bucket}/{key}"
    for action, attributes in itertools.product(("dynamodb:PutItem", "dynamodb:UpdateItem"), ATTRIBUTE_SETS):
        if sim.allowed(principal, action, app.table(stage), {"dynamodb:Attributes": attributes}):
            yield f"{action} {app.table(stage)} {attributes}"
    for key in app.keys(stage):
        if any(sim.allowed(principal, "kms:Sign", key, ctx) for ctx in SIGNING):
            yield f"kms:Sign {key}"


def test_every_policy_of_the_app_resolves(app):
    # An unresolved value matches nothing: in an Allow it would make "is denied" pass vacuously.
    statements = [s for r in app.sim.roles.values() for s in r.identity + r.trust]
    statements += [s for p in app.sim.resource_policies for s in p.statements]
    assert len(statements) > 100
    assert [(s.source, s.tokens) for s in statements if s.tokens] == []


# --- 1. dev cannot write prod -----------------------------------------------------------------
def test_no_dev_principal_writes_prod_data(app):
    # Given every dev role, and a dev administrator allowed everything by its own account
    admin = f"arn:aws:iam::{app.env('dev')[0]}:role/dev-admin"
    app.sim.add_principal(admin, EVERYTHING)
    # When each puts objects in every prod bucket, writes the prod registry and signs with prod keys
    found = [f"{p}: {w}" for p in [*app.roles("dev"), admin] for w in _writes(app.sim, p, app, "prod")]
    # Then no request is allowed
    assert found == []


def test_no_dev_principal_reaches_a_prod_role_that_writes_prod(app):
    # Given a dev administrator that may assume anything and tag its own session as it likes
    dev_account, prod_account = app.env("dev")[0], app.env("prod")[0]
    admin = f"arn:aws:iam::{dev_account}:role/dev-admin"
    app.sim.add_principal(admin, EVERYTHING)
    reached: set[str] = set()
    for start, session in itertools.product([*app.roles("dev"), admin], SESSIONS):
        reached |= app.sim.assumable_from(start, session)
    # When it chains AssumeRole as far as trust policies let it
    prod_roles = sorted(r for r in reached if r.split(":")[4] == prod_account)
    # Then no prod role it reaches can write prod data (today it reaches none at all)
    assert [f"{r}: {w}" for r in prod_roles for w in _writes(app.sim, r, app, "prod")] == []


def test_prod_promotion_reads_dev_through_both_policies_and_writes_nothing_there(app):
    # The one cross-account path: prod's promotion role reads dev's registry (dev's resource
    # policies are one side, its identity policy the other); it writes nothing of dev.
    dev_account, region = app.env("dev")
    promotion = f"arn:aws:iam::{app.env('prod')[0]}:role/{promotion_role_name('prod')}"
    bucket = stage_bucket_name("artifacts", stage="dev", account=dev_account, region=region)
    approval_key = app.key_by_alias("dev", approval_key_alias(registry_table_name("dev")))
    assert approval_key
    assert app.sim.allowed(promotion, "dynamodb:GetItem", app.table("dev"))
    assert app.sim.allowed(promotion, "s3:GetObject", f"arn:aws:s3:::{bucket}/artifacts/m/abc/model.onnx")
    assert app.sim.allowed(promotion, "kms:Verify", approval_key)
    assert list(_writes(app.sim, promotion, app, "dev")) == []


# --- 2. approvals: only the approval path signs them and writes their attributes --------------
@pytest.mark.parametrize("stage", STAGES)
def test_only_the_approval_path_signs_approvals(app, stage):
    key = app.key_by_alias(stage, approval_key_alias(registry_table_name(stage)))
    assert key, "no approval key"
    # Every role of both stages tries each signing algorithm with the approval key
    signers = {
        role
        for role in app.roles("dev") + app.roles("prod")
        if any(app.sim.allowed(role, "kms:Sign", key, ctx) for ctx in SIGNING)
    }
    # Only the approval path can sign, and it can
    assert signers
    assert signers <= app.approval_path(stage)


@pytest.mark.parametrize("stage", STAGES)
def test_an_account_administrator_cannot_sign_approvals(app, stage):
    # Given an administrator of the stage's own account, allowed everything by its identity policy
    key = app.key_by_alias(stage, approval_key_alias(registry_table_name(stage)))
    admin = f"arn:aws:iam::{app.env(stage)[0]}:role/{stage}-admin"
    app.sim.add_principal(admin, EVERYTHING)
    # Then the approval key's own policy still refuses it a signature
    assert not any(app.sim.allowed(admin, "kms:Sign", key, ctx) for ctx in SIGNING)


@pytest.mark.parametrize("stage", STAGES)
def test_registry_writers_cannot_write_approval_attributes(app, stage):
    table = app.table(stage)
    ordinary = {"dynamodb:Attributes": ["pk", "sk", "metrics", "artifacts"]}
    # Writers: every role allowed an ordinary UpdateItem on the registry table
    writers = [r for r in app.roles(stage) if app.sim.allowed(r, "dynamodb:UpdateItem", table, ordinary)]
    assert any(w.endswith(f":role/{retrain_role_name(stage, 'credit-risk')}") for w in writers)
    found = []
    for writer in set(writers) - app.approval_path(stage):
        for action, attribute in itertools.product(
            ("dynamodb:PutItem", "dynamodb:UpdateItem"), APPROVAL_ATTRIBUTES
        ):
            request = {"dynamodb:Attributes": ["pk", "sk", attribute]}
            if app.sim.allowed(writer, action, table, request):
                found.append(f"{writer}: {action} {attribute}")
        assert app.sim.allowed(writer, "dynamodb:PutItem", table, ordinary), writer
    assert found == []


# --- 3. the registry API: only the approver approves or rejects -------------------------------
@pytest.mark.parametrize("stage", STAGES)
def test_only_the_approver_may_call_approve_and_reject(app, stage):
    account, _ = app.env(stage)
    route = app.approval_route(stage)
    assert route, "no approve route"
    approve = route[0]
    reject = approve.removesuffix("/approve") + "/reject"
    read = approve.rsplit("/versions/", 1)[0].replace("/POST/", "/GET/")
    approver = f"arn:aws:iam::{account}:role/{approver_role_name(stage)}"
    # An intruder of the account whose own policy allows calling any API
    intruder = f"arn:aws:iam::{account}:role/intruder"
    app.sim.add_principal(
        intruder, {"Statement": [{"Effect": "Allow", "Action": "execute-api:*", "Resource": "*"}]}
    )
    for decision in (approve, reject):
        assert app.sim.allowed(approver, "execute-api:Invoke", decision), decision
        for other in [*app.roles("dev"), *app.roles("prod"), intruder]:
            if other != approver:
                assert not app.sim.allowed(other, "execute-api:Invoke", decision), (other, decision)
    # The deny is narrow: the intruder may still read
    assert app.sim.allowed(intruder, "execute-api:Invoke", read)


@pytest.mark.parametrize("stage", STAGES)
def test_no_role_invokes_the_approval_function_around_the_api(app, stage):
    route = app.approval_route(stage)
    assert route
    function = route[1]
    callers = [
        r
        for r in app.roles("dev") + app.roles("prod")
        if app.sim.allowed(r, "lambda:InvokeFunction", function)
    ]
    assert callers == []


@pytest.mark.parametrize("stage", STAGES)
def test_no_role_adds_foreign_code_to_a_function(app, stage):
    # A layer is code: attached to the endpoint it would run as the endpoint's role, around
    # every signature check of the runtime. Binding a model version needs environment changes only.
    layer = {"lambda:Layer": ["arn:aws:lambda:eu-west-1:999999999999:layer:payload:1"]}
    _, service = stage_stack_names(stage)
    functions = [
        app.resolver.get_att(service, logical_id, "Arn")
        for logical_id, r in app.stacks[service].template["Resources"].items()
        if r["Type"] == "AWS::Lambda::Function"
    ]
    found = [
        f"{role}: {function}"
        for role in app.roles(stage)
        for function in functions
        if app.sim.allowed(role, "lambda:UpdateFunctionConfiguration", function, layer)
    ]
    assert found == []


# --- 4. the audit trail and the registry cannot be erased -------------------------------------
AUDIT_OBJECT_ACTIONS = (
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:DeleteObjectTagging",
    "s3:DeleteObjectVersionTagging",
    "s3:PutObjectRetention",
    "s3:BypassGovernanceRetention",
)
AUDIT_BUCKET_ACTIONS = ("s3:PutBucketObjectLockConfiguration", "s3:DeleteBucket")
TABLE_ERASE_ACTIONS = (
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:PartiQLDelete",
    "dynamodb:DeleteTable",
)


@pytest.mark.parametrize("stage", STAGES)
def test_no_role_rewrites_or_erases_the_audit_trail(app, stage):
    account, region = app.env(stage)
    bucket = audit_bucket_name(stage_bucket_name("artifacts", stage=stage, account=account, region=region))
    assert bucket in app.buckets(stage), "no audit bucket"
    requests = [
        (a, f"arn:aws:s3:::{bucket}/events/{k}") for a in AUDIT_OBJECT_ACTIONS for k in ("e.json", "x")
    ]
    requests += [(a, f"arn:aws:s3:::{bucket}") for a in AUDIT_BUCKET_ACTIONS]
    found = [
        f"{role}: {action} {resource}"
        for role in app.roles("dev") + app.roles("prod")
        for action, resource in requests
        if app.sim.allowed(role, action, resource)
    ]
    assert found == []


@pytest.mark.parametrize("stage", STAGES)
def test_no_role_deletes_registry_items(app, stage):
    found = [
        f"{role}: {action}"
        for role in app.roles("dev") + app.roles("prod")
        for action in TABLE_ERASE_ACTIONS
        if app.sim.allowed(role, action, app.table(stage))
    ]
    assert found == []


# --- 5. roles that people or other accounts assume carry a condition --------------------------
def _assumed_beyond_services(app: App) -> dict[str, list]:
    """Role ARN → its trust statements that let a non-service principal assume it."""
    found: dict[str, list] = {}
    for stage in STAGES:
        for arn in app.roles(stage):
            for statement in app.sim.roles[arn].trust:
                kinds = set((statement.principals or {}).keys()) | set(
                    (statement.not_principals or {}).keys()
                )
                if (
                    statement.effect == "Allow"
                    and statement.names_action("sts:AssumeRole")
                    and kinds - {"Service"}
                ):
                    found.setdefault(arn, []).append(statement)
    return found


def test_trust_beyond_services_carries_a_condition(app):
    found = _assumed_beyond_services(app)
    unconditioned = [
        f"{arn}: {statement.source}"
        for arn, statements in found.items()
        if arn.rsplit("/", 1)[-1] not in TRUST_EXCEPTIONS
        for statement in statements
        if not any(
            key.lower().startswith(TRUST_CONDITION_KEYS)
            for keys in statement.conditions.values()
            for key in keys
        )
    ]
    assert unconditioned == []


def test_an_untagged_principal_cannot_assume_roles_people_assume(app):
    # Given an intruder in each account whose own policy allows assuming any role
    found = []
    for stage in STAGES:
        intruder = f"arn:aws:iam::{app.env(stage)[0]}:role/intruder"
        app.sim.add_principal(
            intruder, {"Statement": [{"Effect": "Allow", "Action": "sts:*", "Resource": "*"}]}
        )
        # When it assumes each role people or other accounts may assume, with no session tags
        for role in _assumed_beyond_services(app):
            if role.rsplit("/", 1)[-1] not in TRUST_EXCEPTIONS and app.sim.can_assume(intruder, role):
                found.append(f"{intruder} → {role}")
    # Then every attempt is refused
    assert found == []
