"""The IAM simulator's own tests: each modelled rule on small hand-written policies."""

from __future__ import annotations

import pytest

from tests.security.iam_sim import NotModelled, Simulator
from tests.security.iam_sim_cfn import Resolver, StackInput, simulator_from_stacks
from tests.security.iam_sim_conditions import condition_holds, wildcard_match

A, B = "111111111111", "222222222222"
ALICE = f"arn:aws:iam::{A}:role/alice"
MALLORY = f"arn:aws:iam::{B}:role/mallory"
BUCKET = "arn:aws:s3:::data"
TABLE = f"arn:aws:dynamodb:eu-west-1:{A}:table/registry"
KEY = f"arn:aws:kms:eu-west-1:{A}:key/k1"


def policy(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action, resource="*", **extra) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action, resource="*", **extra) -> dict:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def sim_with(identity: dict, arn: str = ALICE) -> Simulator:
    sim = Simulator()
    sim.bucket_accounts["data"] = A
    sim.add_role(arn, identity=identity)
    return sim


# --- matching -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("s3:Get*", "s3:GetObject", True),
        ("s3:Get*", "s3:PutObject", False),
        ("arn:aws:s3:::data/*", "arn:aws:s3:::data/a/b/c", True),
        ("arn:aws:s3:::data/?", "arn:aws:s3:::data/ab", False),
        ("arn:aws:s3:::data/??", "arn:aws:s3:::data/ab", True),
        ("arn:aws:s3:::dat[a]", "arn:aws:s3:::data", False),  # no character classes in IAM
        ("*", "anything:at/all", True),
    ],
)
def test_wildcards(pattern, value, expected):
    assert wildcard_match(pattern, value) is expected


def test_actions_match_case_insensitively_resources_do_not():
    sim = sim_with(policy(allow("S3:getobject", f"{BUCKET}/Reports/*")))
    assert sim.allowed(ALICE, "s3:GetObject", f"{BUCKET}/Reports/x")
    assert not sim.allowed(ALICE, "s3:GetObject", f"{BUCKET}/reports/x")


def test_nothing_is_allowed_by_default():
    decision = sim_with(policy()).allowed(ALICE, "s3:GetObject", f"{BUCKET}/x")
    assert not decision and decision.reason.startswith("implicit deny")


def test_an_explicit_deny_wins_over_any_allow():
    sim = sim_with(policy(allow("s3:*", f"{BUCKET}/*"), deny("s3:DeleteObject", f"{BUCKET}/*")))
    assert sim.allowed(ALICE, "s3:PutObject", f"{BUCKET}/x")
    decision = sim.allowed(ALICE, "s3:DeleteObject", f"{BUCKET}/x")
    assert not decision and decision.reason == "explicit deny"


def test_a_resource_policy_deny_wins_over_an_identity_allow():
    sim = sim_with(policy(allow("s3:*", f"{BUCKET}/*")))
    sim.add_resource_policy(BUCKET, policy(deny("s3:*", f"{BUCKET}/*", Principal="*")))
    assert not sim.allowed(ALICE, "s3:GetObject", f"{BUCKET}/x")


def test_not_action_allows_everything_else():
    sim = sim_with(policy({"Effect": "Allow", "NotAction": ["s3:Delete*"], "Resource": "*"}))
    assert sim.allowed(ALICE, "s3:PutObject", f"{BUCKET}/x")
    assert not sim.allowed(ALICE, "s3:DeleteObjectVersion", f"{BUCKET}/x")


def test_not_resource_denies_everything_but_the_listed():
    sim = sim_with(
        policy(
            allow("s3:*", f"{BUCKET}/*"),
            {"Effect": "Deny", "Action": "s3:*", "NotResource": f"{BUCKET}/public/*"},
        )
    )
    assert sim.allowed(ALICE, "s3:GetObject", f"{BUCKET}/public/x")
    assert not sim.allowed(ALICE, "s3:GetObject", f"{BUCKET}/private/x")


# --- accounts -------------------------------------------------------------------------------
def test_same_account_resource_policy_naming_the_role_suffices():
    sim = sim_with(policy())
    sim.add_resource_policy(BUCKET, policy(allow("s3:GetObject", f"{BUCKET}/*", Principal={"AWS": ALICE})))
    assert sim.allowed(ALICE, "s3:GetObject", f"{BUCKET}/x")


def test_same_account_root_in_a_resource_policy_delegates_to_identity_policies():
    sim = sim_with(policy())
    root = {"AWS": f"arn:aws:iam::{A}:root"}
    sim.add_resource_policy(BUCKET, policy(allow("s3:GetObject", f"{BUCKET}/*", Principal=root)))
    assert not sim.allowed(ALICE, "s3:GetObject", f"{BUCKET}/x")


def test_cross_account_needs_identity_and_resource_policy():
    identity = policy(allow("s3:PutObject", f"{BUCKET}/*"))
    sim = sim_with(identity, arn=MALLORY)
    # Identity alone: the bucket is in A, Mallory in B
    assert not sim.allowed(MALLORY, "s3:PutObject", f"{BUCKET}/x")
    # Resource policy alone
    other = sim_with(policy(), arn=MALLORY)
    grant = policy(allow("s3:PutObject", f"{BUCKET}/*", Principal={"AWS": B}))
    other.add_resource_policy(BUCKET, grant)
    assert not other.allowed(MALLORY, "s3:PutObject", f"{BUCKET}/x")
    # Both
    sim.add_resource_policy(BUCKET, grant)
    assert sim.allowed(MALLORY, "s3:PutObject", f"{BUCKET}/x")


def test_dynamodb_without_resource_policy_is_closed_to_other_accounts():
    sim = sim_with(policy(allow("dynamodb:*", "*")), arn=MALLORY)
    assert not sim.allowed(MALLORY, "dynamodb:PutItem", TABLE)


def test_a_kms_key_policy_is_required_even_in_the_same_account():
    sim = sim_with(policy(allow("kms:Sign", KEY)))
    sim.add_resource_policy(KEY, policy(allow("kms:Verify", "*", Principal={"AWS": ALICE})), kind="kms")
    assert not sim.allowed(ALICE, "kms:Sign", KEY)
    sim.add_resource_policy(
        KEY, policy(allow("kms:*", "*", Principal={"AWS": f"arn:aws:iam::{A}:root"})), kind="kms"
    )
    assert sim.allowed(ALICE, "kms:Sign", KEY)


def test_a_service_principal_gets_only_what_resource_policies_grant():
    function = f"arn:aws:lambda:eu-west-1:{A}:function:f"
    sim = Simulator()
    source = {"ArnLike": {"aws:SourceArn": f"arn:aws:execute-api:eu-west-1:{A}:api/*"}}
    grant = allow("lambda:InvokeFunction", function, Principal={"Service": "apigateway.amazonaws.com"})
    sim.add_resource_policy(function, policy({**grant, "Condition": source}))
    api = {"aws:SourceArn": f"arn:aws:execute-api:eu-west-1:{A}:api/prod/GET/x"}
    assert sim.allowed("apigateway.amazonaws.com", "lambda:InvokeFunction", function, api)
    assert not sim.allowed("apigateway.amazonaws.com", "lambda:InvokeFunction", function)
    assert not sim.allowed("events.amazonaws.com", "lambda:InvokeFunction", function, api)


# --- trust ----------------------------------------------------------------------------------
def trusting(principal: dict, **extra) -> dict:
    return policy({"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": principal, **extra})


def test_trust_of_a_service():
    sim = Simulator()
    target = f"arn:aws:iam::{A}:role/fn"
    sim.add_role(target, trust=trusting({"Service": "lambda.amazonaws.com"}))
    assert sim.can_assume("lambda.amazonaws.com", target)
    assert not sim.can_assume("states.amazonaws.com", target)
    assert not sim.can_assume(ALICE, target)


def test_trust_of_an_account_root_needs_the_principals_own_allow():
    target = f"arn:aws:iam::{A}:role/ops"
    sim = Simulator()
    sim.add_role(target, trust=trusting({"AWS": f"arn:aws:iam::{A}:root"}))
    sim.add_role(ALICE, identity=policy(allow("sts:AssumeRole", target)))
    sim.add_role(f"arn:aws:iam::{A}:role/bob")
    assert sim.can_assume(ALICE, target)
    assert not sim.can_assume(f"arn:aws:iam::{A}:role/bob", target)


def test_trust_naming_a_role_directly_suffices_in_the_same_account_not_across():
    target = f"arn:aws:iam::{A}:role/ops"
    sim = Simulator()
    sim.add_role(target, trust=trusting({"AWS": [ALICE, MALLORY]}))
    sim.add_role(MALLORY)
    assert sim.can_assume(ALICE, target)
    assert not sim.can_assume(MALLORY, target)  # no sts:AssumeRole in Mallory's own policy
    sim.add_role(MALLORY, identity=policy(allow("sts:AssumeRole", "*")))
    assert sim.can_assume(MALLORY, target)


def test_an_identity_allow_does_not_replace_the_trust_policy():
    target = f"arn:aws:iam::{A}:role/ops"
    sim = Simulator()
    sim.add_role(target, trust=trusting({"Service": "lambda.amazonaws.com"}))
    sim.add_role(ALICE, identity=policy(allow("sts:*", "*")))
    assert not sim.can_assume(ALICE, target)


def test_trust_conditions_and_role_chains():
    ops, admin = f"arn:aws:iam::{A}:role/ops", f"arn:aws:iam::{B}:role/admin"
    sim = Simulator()
    sim.add_role(ops, trust=trusting({"AWS": A}), identity=policy(allow("sts:AssumeRole", admin)))
    condition = {"StringEquals": {"sts:ExternalId": "secret"}}
    sim.add_role(admin, trust=trusting({"AWS": ops}, Condition=condition))
    sim.add_principal(ALICE, policy(allow("sts:AssumeRole", "*")))
    assert sim.assumable_from(ALICE) == {ops}
    assert sim.assumable_from(ALICE, {"sts:ExternalId": "secret"}) == {ops, admin}


def test_unknown_roles_cannot_be_assumed():
    assert not Simulator().can_assume(ALICE, f"arn:aws:iam::{A}:role/missing")


# --- conditions -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("operator", "values", "context", "expected"),
    [
        ("StringEquals", ["a"], ["a"], True),
        ("StringEquals", ["a"], ["A"], False),
        ("StringEqualsIgnoreCase", ["a"], ["A"], True),
        ("StringNotEquals", ["a", "b"], ["c"], True),
        ("StringNotEquals", ["a", "b"], ["b"], False),
        ("StringLike", ["team/*"], ["team/x"], True),
        ("StringLike", ["team/?"], ["team/xy"], False),
        ("StringNotLike", ["team/*"], ["other"], True),
        ("StringNotLike", ["team/*"], ["team/x"], False),
        ("ArnEquals", [ALICE], [ALICE], True),
        ("ArnLike", [f"arn:aws:iam::{A}:role/*"], [ALICE], True),
        ("ArnLike", ["arn:aws:iam::*:role/alice"], [MALLORY], False),
        ("ArnNotLike", [f"arn:aws:iam::{A}:*"], [MALLORY], True),
        ("ArnNotEquals", [ALICE], [ALICE], False),
        ("Bool", ["true"], ["True"], True),
        ("Bool", ["false"], ["true"], False),
        ("NumericLessThan", ["1.2"], ["1.0"], True),
        ("NumericLessThan", ["1.2"], ["1.2"], False),
        ("NumericLessThanEquals", ["1.2"], ["1.2"], True),
        ("NumericGreaterThan", ["10"], ["11"], True),
        ("NumericGreaterThanEquals", ["10"], ["9"], False),
        ("NumericEquals", ["3"], ["3.0"], True),
        ("NumericNotEquals", ["3"], ["4"], True),
        ("NumericEquals", ["3"], ["three"], False),
    ],
)
def test_condition_operators(operator, values, context, expected):
    assert condition_holds(operator, "k", tuple(values), {"k": tuple(context)}) is expected


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        ("StringEquals", False),
        ("StringLike", False),
        ("ArnLike", False),
        ("Bool", False),
        ("NumericLessThan", False),
        # negated operators hold when the key is missing (IAM user guide, "Condition operators")
        ("StringNotEquals", True),
        ("ArnNotLike", True),
        ("StringEqualsIfExists", True),
        ("ArnLikeIfExists", True),
        ("ForAnyValue:StringEquals", False),
        ("ForAllValues:StringEquals", True),
        ("ForAnyValue:StringNotEquals", False),
    ],
)
def test_a_missing_key(operator, expected):
    assert condition_holds(operator, "k", ("a",), {}) is expected


def test_if_exists_compares_a_present_key():
    assert not condition_holds("StringEqualsIfExists", "k", ("a",), {"k": ("b",)})
    assert condition_holds("StringEqualsIfExists", "k", ("a",), {"k": ("a",)})


def test_null_tests_presence():
    assert condition_holds("Null", "k", ("true",), {})
    assert not condition_holds("Null", "k", ("true",), {"k": ("x",)})
    assert condition_holds("Null", "k", ("false",), {"k": ("x",)})
    assert not condition_holds("Null", "k", ("false",), {})


@pytest.mark.parametrize(
    ("operator", "context", "expected"),
    [
        ("ForAnyValue:StringEquals", ["pk", "status"], True),
        ("ForAnyValue:StringEquals", ["pk", "sk"], False),
        ("ForAllValues:StringEquals", ["status"], True),
        ("ForAllValues:StringEquals", ["pk", "status"], False),
        ("ForAllValues:StringEquals", [], True),
        ("ForAnyValue:StringEquals", [], False),
        ("ForAnyValue:StringNotEquals", ["status", "pk"], True),
        ("ForAllValues:StringNotEquals", ["pk", "sk"], True),
        ("ForAllValues:StringNotEquals", ["pk", "status"], False),
        ("ForAnyValue:StringLike", ["decided_*"], False),
        ("ForAllValues:StringLike", ["status", "decision_reason"], True),
    ],
)
def test_set_qualifiers(operator, context, expected):
    values = ("status", "decided_by", "decision_*") if "Like" in operator else ("status", "decided_by")
    assert condition_holds(
        operator, "dynamodb:Attributes", values, {"dynamodb:attributes": tuple(context)}
    ) is (expected)


def test_condition_keys_are_case_insensitive_through_the_simulator():
    statement = allow(
        "s3:GetObject", f"{BUCKET}/*", Condition={"StringEquals": {"AWS:PrincipalTag/Team": "ml"}}
    )
    sim = sim_with(policy(statement))
    assert sim.allowed(ALICE, "s3:GetObject", f"{BUCKET}/x", {"aws:principaltag/team": "ml"})
    assert not sim.allowed(ALICE, "s3:GetObject", f"{BUCKET}/x", {"aws:principaltag/team": "ML"})


def test_a_deny_on_approval_attributes_lets_other_writes_through():
    guarded = {"ForAnyValue:StringEquals": {"dynamodb:Attributes": ["status", "decided_by"]}}
    sim = sim_with(
        policy(allow("dynamodb:UpdateItem", TABLE), deny("dynamodb:UpdateItem", TABLE, Condition=guarded))
    )
    assert sim.allowed(ALICE, "dynamodb:UpdateItem", TABLE, {"dynamodb:Attributes": ["pk", "sk", "metrics"]})
    assert not sim.allowed(ALICE, "dynamodb:UpdateItem", TABLE, {"dynamodb:Attributes": ["pk", "status"]})


def test_conditions_of_one_statement_all_hold():
    both = {"StringEquals": {"a": "1", "b": "2"}, "Bool": {"aws:SecureTransport": "true"}}
    sim = sim_with(policy(allow("s3:GetObject", f"{BUCKET}/*", Condition=both)))
    assert sim.allowed(ALICE, "s3:GetObject", f"{BUCKET}/x", {"a": "1", "b": "2"})
    assert not sim.allowed(ALICE, "s3:GetObject", f"{BUCKET}/x", {"a": "1"})
    assert not sim.allowed(
        ALICE, "s3:GetObject", f"{BUCKET}/x", {"a": "1", "b": "2", "aws:SecureTransport": False}
    )


@pytest.mark.parametrize(
    "operator", ["DateGreaterThan", "IpAddress", "BinaryEquals", "ForSomeValues:StringEquals"]
)
def test_operators_outside_the_subset_are_refused(operator):
    with pytest.raises(NotModelled):
        condition_holds(operator, "k", ("a",), {"k": ("a",)})


# --- templates ------------------------------------------------------------------------------
STATEFUL = {
    "Resources": {
        "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "data"}},
        "Table": {"Type": "AWS::DynamoDB::Table", "Properties": {}},
        "Key": {"Type": "AWS::KMS::Key", "Properties": {"KeyPolicy": policy()}},
        "Signer": {
            "Type": "AWS::KMS::Key",
            "Properties": {
                "KeyPolicy": policy(allow("kms:*", "*", Principal={"AWS": f"arn:aws:iam::{A}:root"}))
            },
        },
        "SignerAlias": {
            "Type": "AWS::KMS::Alias",
            "Properties": {"AliasName": "alias/approval", "TargetKeyId": {"Fn::GetAtt": ["Signer", "Arn"]}},
        },
    },
    "Outputs": {
        "TableArn": {"Value": {"Fn::GetAtt": ["Table", "Arn"]}, "Export": {"Name": "S:TableArn"}},
    },
}
SERVICE = {
    "Resources": {
        "Role": {
            "Type": "AWS::IAM::Role",
            "Properties": {"AssumeRolePolicyDocument": trusting({"Service": "lambda.amazonaws.com"})},
        },
        "RolePolicy": {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "Roles": [{"Ref": "Role"}],
                "PolicyName": "p",
                "PolicyDocument": policy(
                    allow("dynamodb:PutItem", {"Fn::ImportValue": "S:TableArn"}),
                    allow(
                        "s3:PutObject",
                        {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::data/", "out/*"]]},
                    ),
                    allow(
                        "sqs:SendMessage",
                        {"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:q"},
                    ),
                    allow("states:StartExecution", {"Fn::GetAtt": ["Missing", "Arn"]}),
                    allow(
                        "kms:Sign",
                        {"Fn::Sub": "arn:aws:kms:${AWS::Region}:${AWS::AccountId}:key/*"},
                        Condition={"ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/approval"}},
                    ),
                ),
            },
        },
    }
}


@pytest.fixture
def loaded():
    stacks = [StackInput("S", A, "eu-west-1", STATEFUL), StackInput("Svc", A, "eu-west-1", SERVICE)]
    return simulator_from_stacks(stacks)


def test_templates_resolve_refs_imports_joins_and_subs(loaded):
    sim, _ = loaded
    role = f"arn:aws:iam::{A}:role/Svc-Role"
    assert sim.allowed(role, "dynamodb:PutItem", f"arn:aws:dynamodb:eu-west-1:{A}:table/S-Table")
    assert sim.allowed(role, "s3:PutObject", "arn:aws:s3:::data/out/x")
    assert sim.allowed(role, "sqs:SendMessage", f"arn:aws:sqs:eu-west-1:{A}:q")
    assert sim.can_assume("lambda.amazonaws.com", role)


def test_an_unresolvable_value_matches_nothing_and_says_so(loaded):
    sim, _ = loaded
    decision = sim.allowed(f"arn:aws:iam::{A}:role/Svc-Role", "states:StartExecution", "*")
    assert not decision
    assert decision.unresolved == ("GetAtt(Missing.Arn)",)


def test_resolver_placeholders(loaded):
    _, resolver = loaded
    assert resolver.resolve("S", {"Fn::GetAtt": ["Key", "Arn"]}) == f"arn:aws:kms:eu-west-1:{A}:key/Key"
    assert resolver.resolve("S", {"Ref": "Key"}) == "Key"
    assert resolver.resolve("S", {"Ref": "Bucket"}) == "data"
    assert resolver.resolve("S", {"Fn::Select": [1, {"Fn::Split": [":", "a:b:c"]}]}) == "b"
    assert resolver.resolve("S", {"Fn::Sub": ["${X}-${!Y}", {"X": {"Ref": "AWS::URLSuffix"}}]}) == (
        "amazonaws.com-${Y}"
    )
    assert "\x00" in resolver.resolve("S", {"Fn::If": ["C", "a", "b"]})


def test_a_key_policy_from_a_template_is_required(loaded):
    sim, _ = loaded
    sim.add_principal(ALICE, policy(allow("kms:*", "*")))
    assert not sim.allowed(ALICE, "kms:Sign", f"arn:aws:kms:eu-west-1:{A}:key/Key")


def test_resolver_accepts_the_assembly_stacks_shape():
    stack = StackInput("X", A, "us-east-1", {"Resources": {}})
    assert Resolver([stack]).resolve("X", {"Ref": "AWS::Region"}) == "us-east-1"


def test_key_aliases_of_the_templates_are_in_the_request_context(loaded):
    sim, _ = loaded
    role = f"arn:aws:iam::{A}:role/Svc-Role"
    assert sim.allowed(role, "kms:Sign", f"arn:aws:kms:eu-west-1:{A}:key/Signer")
    # The other key carries no such alias (and its key policy allows nobody)
    assert not sim.allowed(role, "kms:Sign", f"arn:aws:kms:eu-west-1:{A}:key/Key")


def test_not_principal_denies_everyone_else():
    sim = sim_with(policy(allow("s3:*", f"{BUCKET}/*")))
    sim.add_role(f"arn:aws:iam::{A}:role/bob", identity=policy(allow("s3:*", f"{BUCKET}/*")))
    guard = {"Effect": "Deny", "NotPrincipal": {"AWS": ALICE}, "Action": "s3:*", "Resource": f"{BUCKET}/*"}
    sim.add_resource_policy(BUCKET, policy(guard))
    assert sim.allowed(ALICE, "s3:GetObject", f"{BUCKET}/x")
    assert not sim.allowed(f"arn:aws:iam::{A}:role/bob", "s3:GetObject", f"{BUCKET}/x")


def test_a_resource_policy_covers_its_sub_resources_a_trust_policy_only_its_role():
    sim = Simulator()
    sim.add_resource_policy(BUCKET, policy(deny("s3:*", "*", Principal="*")))
    sim.add_role(ALICE, identity=policy(allow("s3:*", "*")))
    assert not sim.allowed(ALICE, "s3:GetObject", f"{BUCKET}/deep/key")
    assert sim.allowed(ALICE, "s3:GetObject", "arn:aws:s3:::data-other/key")
    ops = f"arn:aws:iam::{A}:role/ops"
    sim.add_role(ops, trust=trusting({"AWS": ALICE}))
    sim.add_role(f"{ops}-admin", trust=trusting({"Service": "lambda.amazonaws.com"}))
    assert sim.can_assume(ALICE, ops)
    assert not sim.can_assume(ALICE, f"{ops}-admin")
