"""A small IAM policy simulator over synthesized CloudFormation: a documented subset of IAM.

moto does not evaluate IAM, so tests that say "role X cannot do Y" evaluate the policies of the
synthesized templates here. :func:`tests.security.iam_sim_cfn.simulator_from_stacks` reads the
templates (resolving ``Ref``, ``Fn::GetAtt``, ``Fn::Join``, ``Fn::Sub``, ``Fn::Select``,
``Fn::Split``, ``Fn::ImportValue`` and pseudo parameters); :class:`Simulator` answers
:meth:`~Simulator.allowed` and :meth:`~Simulator.can_assume` with a :class:`Decision`.

What is modelled
----------------
- Identity policies of roles (``AWS::IAM::Policy``, inline ``Policies``, customer managed
  policies of the templates), trust policies, and resource policies: S3 bucket policies, KMS key
  policies, API Gateway REST API policies, DynamoDB table resource policies, SNS topic
  policies and ``AWS::Lambda::Permission``.
- ``Action``/``NotAction`` (case-insensitive), ``Resource``/``NotResource`` with ``*`` and
  ``?``; ``Principal``/``NotPrincipal`` with ``AWS`` (``*``, a role ARN, an account root
  ``arn:aws:iam::ACCOUNT:root`` or a bare account id) and ``Service``.
- Conditions: see :mod:`tests.security.iam_sim_conditions` (string, ARN, Bool, Null, numeric;
  ``ForAnyValue:``/``ForAllValues:``; ``...IfExists``; IAM's missing-key rules).
- Evaluation: an explicit ``Deny`` anywhere wins. Same account: an identity-policy ``Allow``
  suffices, or a resource-policy ``Allow`` naming the caller itself (or ``*``); a resource
  policy naming only the caller's account root delegates to identity policies. Cross-account:
  both an identity ``Allow`` and a resource-policy ``Allow`` (caller, ``*`` or its account).
  KMS keys of the model and role trust policies are *required* policies: nothing is allowed
  unless the key policy / trust policy allows it (directly, or via the account root together
  with an identity ``Allow``).
- Service principals (``"lambda.amazonaws.com"`` as the caller) get only what resource policies
  and trust policies grant them.
- The request context gets ``aws:PrincipalArn``, ``aws:PrincipalAccount``,
  ``aws:ResourceAccount``, ``aws:SecureTransport=true`` and what the resource supplies
  (``kms:ResourceAliases`` from the templates' ``AWS::KMS::Alias``) unless the caller gives
  them; the caller adds the rest
  (``dynamodb:Attributes``, ``kms:SigningAlgorithm``, ``sts:SourceIdentity``...).

What is not modelled
--------------------
Service control and resource control policies, permission boundaries, session policies and
session tags, KMS grants, S3 ACLs and Object Ownership, S3 Access Points, VPC endpoint policies,
role paths, IAM policy variables (``${aws:username}`` stays literal), AWS managed policies (a
role's managed policy ARNs outside the templates are listed in :attr:`Role.unmodelled`),
``Date*``/``IpAddress``/``Binary`` conditions (they raise :class:`NotModelled`), and which
condition keys a service actually sends. The S3 bucket of an ARN is attributed to the account
whose template defines it; an unknown bucket counts as the caller's own account (the
permissive reading, so "is denied" assertions stay safe).

Unresolvable template values become tokens that match nothing; a :class:`Decision` lists the
tokens of the statements that named the action, so an unexpected denial explains itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from tests.security.iam_sim_conditions import (
    TOKEN,
    Context,
    NotModelled,
    conditions_hold,
    wildcard_match,
)

__all__ = ["TOKEN", "Decision", "NotModelled", "ResourcePolicy", "Role", "Simulator", "Statement"]


def _strings(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in items)


@dataclass(frozen=True)
class Statement:
    """One policy statement, normalised (single values become tuples, ``None`` = element absent)."""

    effect: str
    source: str
    actions: tuple[str, ...] | None = None
    not_actions: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None
    not_resources: tuple[str, ...] | None = None
    principals: Mapping[str, tuple[str, ...]] | None = None
    not_principals: Mapping[str, tuple[str, ...]] | None = None
    conditions: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Mapping, source: str) -> Statement:
        def principal(value: object) -> dict[str, tuple[str, ...]] | None:
            if value is None:
                return None
            if value == "*":
                return {"AWS": ("*",)}
            if not isinstance(value, Mapping):
                raise NotModelled(f"{source}: principal {value!r}")
            return {kind: _strings(v) for kind, v in value.items()}

        def optional(name: str) -> tuple[str, ...] | None:
            return _strings(raw[name]) if name in raw else None

        conditions = {
            op: {key: _strings(values) for key, values in keys.items()}
            for op, keys in raw.get("Condition", {}).items()
        }
        return cls(
            effect=raw["Effect"],
            source=source,
            actions=optional("Action"),
            not_actions=optional("NotAction"),
            resources=optional("Resource"),
            not_resources=optional("NotResource"),
            principals=principal(raw.get("Principal")),
            not_principals=principal(raw.get("NotPrincipal")),
            conditions=conditions,
        )

    def names_action(self, action: str) -> bool:
        if self.actions is not None:
            return any(wildcard_match(a, action, ignore_case=True) for a in self.actions)
        if self.not_actions is not None:
            return not any(wildcard_match(a, action, ignore_case=True) for a in self.not_actions)
        return False

    def names_resource(self, resource: str) -> bool:
        if self.resources is not None:
            return any(wildcard_match(r, resource) for r in self.resources)
        if self.not_resources is not None:
            return not any(wildcard_match(r, resource) for r in self.not_resources)
        return True  # trust policies carry no Resource: the role itself

    @property
    def tokens(self) -> tuple[str, ...]:
        """The unresolved template values this statement holds (shown in decisions)."""
        values = [*(self.resources or ()), *(self.not_resources or ())]
        values += [v for keys in self.conditions.values() for vs in keys.values() for v in vs]
        values += [v for block in (self.principals or {}, self.not_principals or {}) for v in _flat(block)]
        return tuple(sorted({v.replace(TOKEN, "") for v in values if TOKEN in v}))


def _flat(block: Mapping[str, tuple[str, ...]]) -> Iterable[str]:
    return (v for values in block.values() for v in values)


def parse_policy(document: Mapping, source: str) -> tuple[Statement, ...]:
    """The statements of a (resolved) policy document; ``source`` names it in decisions."""
    raw = document.get("Statement", [])
    raw = raw if isinstance(raw, list) else [raw]
    return tuple(Statement.parse(s, f"{source}#{s.get('Sid', i)}") for i, s in enumerate(raw))


@dataclass
class Role:
    """A role (or a hypothetical principal added by a test) and its policies."""

    arn: str
    stack: str = ""
    logical_id: str = ""
    identity: list[Statement] = field(default_factory=list)
    trust: list[Statement] = field(default_factory=list)
    unmodelled: list[str] = field(default_factory=list)
    hypothetical: bool = False  # added by a test (an intruder, an administrator), not a template role

    @property
    def account(self) -> str:
        return self.arn.split(":")[4]

    @property
    def name(self) -> str:
        return self.arn.rsplit("/", 1)[-1]


@dataclass
class ResourcePolicy:
    """A resource-based policy and the resource it is attached to (``owner``)."""

    owner: str
    account: str
    statements: list[Statement]
    kind: str = "resource"  # "resource", "kms" or "trust": kms and trust policies are required
    exact: bool = False  # only ``owner`` itself, not its sub-resources (roles)

    def covers(self, resource: str) -> bool:
        if resource == self.owner:
            return True
        return not self.exact and resource.startswith((self.owner + "/", self.owner + ":"))


@dataclass(frozen=True)
class Caller:
    arn: str
    account: str
    service: str | None = None


@dataclass(frozen=True)
class Decision:
    """The answer to one request, truthy when allowed; ``reason`` says which rule decided."""

    allowed: bool
    reason: str
    statements: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.allowed


def _principal_match(block: Mapping[str, tuple[str, ...]], caller: Caller) -> str | None:
    """``direct`` if the block names the caller (or ``*``), ``account`` if its account root."""
    if caller.service:
        services = block.get("Service", ())
        return "direct" if caller.service in services or "*" in block.get("AWS", ()) else None
    best = None
    for value in block.get("AWS", ()):
        if value in ("*", caller.arn):
            return "direct"
        if value in (caller.account, f"arn:aws:iam::{caller.account}:root"):
            best = "account"
    return best


def _statement_principal(statement: Statement, caller: Caller) -> str | None:
    if statement.principals is not None:
        return _principal_match(statement.principals, caller)
    if statement.not_principals is not None:
        return None if _principal_match(statement.not_principals, caller) else "direct"
    return None


class Simulator:
    """Roles and resource policies of one or more accounts; evaluates requests against them.

    Build it with :func:`tests.security.iam_sim_cfn.simulator_from_stacks`, or by hand with
    :meth:`add_role` and :meth:`add_resource_policy` (the simulator's own tests do).
    """

    def __init__(self) -> None:
        self.roles: dict[str, Role] = {}
        self.resource_policies: list[ResourcePolicy] = []
        #: S3 bucket name → account of the template that defines it (S3 ARNs carry no account).
        self.bucket_accounts: dict[str, str] = {}
        #: Condition keys a resource itself supplies (``kms:ResourceAliases`` of a key), by ARN.
        self.resource_context: dict[str, dict[str, list[str]]] = {}

    # --- building -----------------------------------------------------------------------
    def add_role(
        self, arn: str, *, identity: Mapping | None = None, trust: Mapping | None = None, **kw: object
    ) -> Role:
        """A role (or any principal ARN) with an identity policy and a trust policy document."""
        role = self.roles.setdefault(arn, Role(arn=arn, **kw))
        if identity:
            role.identity.extend(parse_policy(identity, f"{role.name}:identity"))
        if trust:
            role.trust.extend(parse_policy(trust, f"{role.name}:trust"))
            self.add_resource_policy(arn, trust, kind="trust", source=f"{role.name}:trust")
        return role

    def add_resource_policy(
        self, owner: str, document: Mapping, *, kind: str = "resource", source: str = "", account: str = ""
    ) -> ResourcePolicy:
        statements = list(parse_policy(document, source or owner))
        account = account or self._resource_account(owner) or ""
        for policy in self.resource_policies:
            if policy.owner == owner and policy.kind == kind:
                policy.statements.extend(statements)
                return policy
        policy = ResourcePolicy(owner, account, statements, kind=kind, exact=kind == "trust")
        self.resource_policies.append(policy)
        return policy

    # --- queries ------------------------------------------------------------------------
    def roles_of(self, account: str) -> list[Role]:
        """The template roles of ``account`` (hypothetical principals left out)."""
        return [r for r in self.roles.values() if r.account == account and not r.hypothetical]

    def role_named(self, account: str, name: str) -> Role | None:
        return self.roles.get(f"arn:aws:iam::{account}:role/{name}")

    def add_principal(self, arn: str, identity: Mapping | None = None) -> Role:
        """A hypothetical principal (an intruder, an administrator) with ``identity`` as its policy."""
        return self.add_role(arn, identity=identity, hypothetical=True)

    def can_assume(self, principal: str, role_arn: str, context: Mapping | None = None) -> Decision:
        """``sts:AssumeRole`` of ``role_arn`` by ``principal`` (a role ARN or a service name)."""
        if role_arn not in self.roles:
            return Decision(False, f"no role {role_arn} in the model")
        return self.allowed(principal, "sts:AssumeRole", role_arn, context)

    def assumable_from(self, principal: str, context: Mapping | None = None) -> set[str]:
        """Every role ``principal`` reaches by chains of ``sts:AssumeRole`` (itself excluded)."""
        reached: set[str] = set()
        frontier = [principal]
        while frontier:
            current = frontier.pop()
            for arn in self.roles:
                if arn not in reached and arn != principal and self.can_assume(current, arn, context):
                    reached.add(arn)
                    frontier.append(arn)
        return reached

    def allowed(self, principal: str, action: str, resource: str, context: Mapping | None = None) -> Decision:
        """Would ``principal`` be allowed ``action`` on ``resource`` with request ``context``?

        ``principal`` is a role ARN (its identity policies apply; an ARN unknown to the model
        has none) or a service principal such as ``lambda.amazonaws.com``. ``context`` maps
        condition keys to a string or a list of strings.
        """
        caller = self._caller(principal)
        ctx = self._context(caller, resource, context or {})
        identity = self.roles[caller.arn].identity if caller.arn in self.roles else []
        policies = [p for p in self.resource_policies if p.covers(resource)]
        relevant = [(s, "identity") for s in identity if s.names_action(action)]
        for policy in policies:
            for s in policy.statements:
                match = _statement_principal(s, caller)
                if match and s.names_action(action):
                    relevant.append((s, match))
        unresolved = tuple(sorted({t for s, _ in relevant for t in s.tokens}))
        applies = [
            (s, how)
            for s, how in relevant
            if s.names_resource(resource) and conditions_hold(s.conditions, ctx)
        ]
        denies = tuple(s.source for s, _ in applies if s.effect == "Deny")
        if denies:
            return Decision(False, "explicit deny", denies, unresolved)
        sts = action.lower().startswith("sts:")
        return self._decide(caller, resource, policies, applies, unresolved, sts=sts)

    # --- internals ----------------------------------------------------------------------
    def _decide(
        self,
        caller: Caller,
        resource: str,
        policies: list[ResourcePolicy],
        applies: list[tuple[Statement, str]],
        unresolved: tuple[str, ...],
        *,
        sts: bool,
    ) -> Decision:
        allows = [(s, how) for s, how in applies if s.effect == "Allow"]
        by_identity = tuple(s.source for s, how in allows if how == "identity")
        direct = tuple(s.source for s, how in allows if how == "direct")
        via_account = tuple(s.source for s, how in allows if how == "account")
        required = any(p.kind == "kms" or (p.kind == "trust" and sts) for p in policies)
        same_account = (self._resource_account(resource) or caller.account) == caller.account
        if caller.service:
            if direct:
                return Decision(True, "allowed by resource policy (service principal)", direct, unresolved)
            return Decision(False, "implicit deny: no resource policy allows the service", (), unresolved)
        if direct and (same_account or by_identity):
            return Decision(True, "allowed by resource policy", direct + by_identity, unresolved)
        if by_identity and via_account:
            return Decision(
                True, "allowed by identity policy and account delegation", by_identity, unresolved
            )
        if by_identity and same_account and not required:
            return Decision(True, "allowed by identity policy", by_identity, unresolved)
        if by_identity:
            why = "the key/trust policy does not allow it" if required else "no resource policy allows it"
            return Decision(False, f"implicit deny: {why}", by_identity, unresolved)
        return Decision(False, "implicit deny: no policy allows it", direct + via_account, unresolved)

    def _caller(self, principal: str) -> Caller:
        if principal.endswith(".amazonaws.com") and not principal.startswith("arn:"):
            return Caller(arn=principal, account="", service=principal)
        parts = principal.split(":")
        if len(parts) < 6 or parts[2] not in ("iam", "sts"):
            raise ValueError(f"not a principal ARN or service principal: {principal!r}")
        return Caller(arn=principal, account=parts[4])

    def _context(self, caller: Caller, resource: str, given: Mapping) -> Context:
        ctx = {"aws:securetransport": ("true",)}
        if not caller.service:
            ctx["aws:principalarn"] = (caller.arn,)
            ctx["aws:principalaccount"] = (caller.account,)
        account = self._resource_account(resource)
        if account:
            ctx["aws:resourceaccount"] = (account,)
        ctx.update({key.lower(): _strings(v) for key, v in self.resource_context.get(resource, {}).items()})
        ctx.update({key.lower(): _strings(value) for key, value in given.items()})
        return ctx

    def _resource_account(self, resource: str) -> str | None:
        parts = resource.split(":", 5)
        if len(parts) < 6:
            return None
        if parts[2] == "s3" and not parts[4]:
            return self.bucket_accounts.get(parts[5].split("/", 1)[0])
        return parts[4] or None
