"""moto's CloudFormation, taught the resource types it skips and fixed where its models fall short.

moto's CloudFormation skips resource types it has no model for (it warns and creates nothing,
so a ``Ref`` to them yields nothing). :data:`MODEL_MAP` adds a small model class for every
``filled`` and ``emulated`` type of :data:`~localaws.cloudformation.support.RESOURCE_SUPPORT`,
built around its filler (:mod:`localaws.cloudformation.fillers`). The other patches here fix
moto's own models: KMS key tags, API Gateway method request models, the package type of
container-image functions, declared bucket versioning, and resource errors and ``DependsOn``
order. :func:`install` applies them all, through :mod:`localaws.patches`.
"""

from __future__ import annotations

import functools
import json
import uuid
import warnings
from collections.abc import Callable
from typing import Any

from localaws.cloudformation.fillers import FILLERS, FillContext, emulate
from localaws.cloudformation.support import EMULATED, FILLED, RESOURCE_SUPPORT
from localaws.patches import Patch, moto_symbol

_EXCEPTIONS = "moto.cloudformation.exceptions"


@functools.cache
def _filled_base() -> type:
    """The base of every local model class: a moto ``CloudFormationModel`` around a filler."""
    base = moto_symbol("moto.core.common_models.CloudFormationModel", owner=__name__)

    class Filled(base):  # type: ignore[misc, valid-type]  # moto's base class, resolved at run time
        resource_type = ""
        create: Callable[..., tuple[str, dict]]

        def __init__(self, physical_id: str, attributes: dict[str, Any]) -> None:
            self._physical_id = physical_id
            self.attributes = attributes

        @property
        def physical_resource_id(self) -> str:
            return self._physical_id

        @classmethod
        def cloudformation_type(cls) -> str:
            return cls.resource_type

        @staticmethod
        def cloudformation_name_type() -> str:
            return ""

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return True

        def get_cfn_attribute(self, attribute_name: str) -> Any:
            if attribute_name in self.attributes:
                return self.attributes[attribute_name]
            raise moto_symbol(f"{_EXCEPTIONS}.UnformattedGetAttTemplateException", owner=__name__)()

        @classmethod
        def create_from_cloudformation_json(
            cls,
            resource_name: str,
            cloudformation_json: dict,
            account_id: str,
            region_name: str,
            **kwargs: Any,
        ) -> Any:
            return _create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)

        @classmethod
        def update_from_cloudformation_json(cls, original_resource: Any, *args: Any, **kwargs: Any) -> Any:
            return original_resource

        @classmethod
        def delete_from_cloudformation_json(cls, *args: Any, **kwargs: Any) -> None:
            return None

        def is_created(self) -> bool:
            return True

    return Filled


def _create(
    cls: Any, resource_name: str, cloudformation_json: dict, account_id: str, region_name: str, **kwargs: Any
) -> Any:
    resource_type = cls.resource_type
    ctx = FillContext(
        account=account_id,
        region=region_name,
        logical_id=kwargs.get("LogicalId", resource_name),
        stack_name=_stack_name_from_id(kwargs.get("StackId", "")),
        generated_name=resource_name
        if resource_name != resource_type
        else f"{kwargs.get('LogicalId', 'r')}-{uuid.uuid4().hex[:8]}",
    )
    try:
        physical, attributes = cls.create(_plain(cloudformation_json.get("Properties", {})), ctx)
    except Exception as err:  # reported by CreateStack, naming the resource
        raise moto_symbol(f"{_EXCEPTIONS}.ValidationError", owner=__name__)(
            message=f"local AWS could not create {ctx.logical_id} ({resource_type}): {err}"
        ) from err
    return cls(physical, attributes)


def _model_class(resource_type: str, create: Callable[..., tuple[str, dict]]) -> type:
    name = "Filled" + resource_type.replace("::", "")
    return type(name, (_filled_base(),), {"resource_type": resource_type, "create": staticmethod(create)})


def _plain(value: Any) -> Any:
    # moto's Ref yields the model object for a few types without a physical id
    # (e.g. AWS::ApiGateway::Deployment); CloudFormation yields the id.
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    for attribute in ("physical_resource_id", "id", "arn", "name"):
        found = getattr(value, attribute, None)
        if isinstance(found, str):
            return found
    return str(value)


def _stack_name_from_id(stack_id: str) -> str:
    # arn:aws:cloudformation:<region>:<account>:stack/<name>/<uuid>
    parts = stack_id.split(":stack/")
    return parts[1].split("/")[0] if len(parts) == 2 else stack_id


@functools.cache
def local_models() -> dict[str, type]:
    """A model class per filled or emulated resource type (built once, when first needed)."""
    found: dict[str, type] = {}
    for resource_type, support in RESOURCE_SUPPORT.items():
        if support == FILLED:
            found[resource_type] = _model_class(resource_type, FILLERS[resource_type])
        elif support == EMULATED:
            found[resource_type] = _model_class(resource_type, lambda p, c, t=resource_type: emulate(p, c, t))
    return found


def _with_local_models(original: Callable[[], dict[str, type]]) -> Callable[[], dict[str, type]]:
    original()  # moto's own map first (cached), so it lists moto's models only
    models = local_models()

    def get_model_map() -> dict[str, type]:
        return {**original(), **models}

    return get_model_map


def _kms_key_create(original: Any) -> Any:
    kms_backends = moto_symbol("moto.kms.models.kms_backends", owner=__name__)

    def create(cls, /, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        # moto's own model creates every key ENCRYPT_DECRYPT/SYMMETRIC_DEFAULT whatever the
        # template says: a SIGN_VERIFY key (the registry's signing keys) could not sign.
        props = cloudformation_json.get("Properties", {})
        policy = props.get("KeyPolicy")
        tags = [
            {"TagKey": t.get("Key", t.get("TagKey")), "TagValue": t.get("Value", t.get("TagValue"))}
            for t in props.get("Tags", [])
        ]
        key = kms_backends[account_id][region_name].create_key(
            policy=json.dumps(policy) if isinstance(policy, dict) else policy,
            key_usage=props.get("KeyUsage", "ENCRYPT_DECRYPT"),
            key_spec=props.get("KeySpec", "SYMMETRIC_DEFAULT"),
            description=props.get("Description"),
            tags=tags,
        )
        key.key_rotation_status = props.get("EnableKeyRotation", False)
        key.enabled = props.get("Enabled", True)
        _same_key_every_up(
            kms_backends[account_id][region_name], key, f"{account_id}/{region_name}/{resource_name}"
        )
        return key

    return classmethod(create)


def _same_key_every_up(backend: Any, key: Any, where: str) -> None:
    """A persisted stage's key keeps its id and material across ``up``s, as a KMS key outlives clients.

    Signatures made before a restart (the registry's manifests and approvals) must still verify,
    and ARNs bound into functions still name the key. The material is kept beside the pinned
    names (``names.json`` in the stage's state directory); nothing is kept without persistence.
    """
    from cryptography.hazmat.primitives import serialization

    from localaws.journal import names

    kept = names.remembered(f"kms-key/{where}")
    inner = getattr(key.private_key, "private_key", None)
    if kept is None:
        pem = (
            b""
            if inner is None
            else inner.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        material = {"id": key.id, "material": key.key_material.hex(), "pem": pem.decode()}
        names.remember(f"kms-key/{where}", json.dumps(material))
        return
    material = json.loads(kept)
    backend.keys.pop(key.id, None)
    key.arn = key.arn.rsplit("/", 1)[0] + "/" + material["id"]
    key.id = material["id"]
    key.key_material = bytes.fromhex(material["material"])
    if inner is not None and material["pem"]:
        key.private_key.private_key = serialization.load_pem_private_key(
            material["pem"].encode(), password=None
        )
    backend.keys[key.id] = key


def _method_create(original: Any) -> Any:
    func = original.__func__

    def create(cls, /, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        method = func(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        props = cloudformation_json.get("Properties", {})
        method.request_models = props.get("RequestModels") or method.request_models
        method.request_validator_id = props.get("RequestValidatorId") or method.request_validator_id
        method.request_parameters = props.get("RequestParameters") or method.request_parameters
        return method

    return classmethod(create)


def _function_create(original: Any) -> Any:
    func = original.__func__

    def create(cls, /, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        fn = func(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        props = cloudformation_json.get("Properties", {})
        # Set on $LATEST before any version is published, so versions copy them.
        fn.package_type = props.get("PackageType") or fn.package_type
        if props.get("ImageConfig"):
            image_config = moto_symbol("moto.awslambda.models.ImageConfig", owner=__name__)
            fn.image_config = image_config(props["ImageConfig"])
        fn.architectures = props.get("Architectures") or fn.architectures
        return fn

    return classmethod(create)


def _bucket_create(original: Any) -> Any:
    func = original.__func__

    def create(cls, /, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        bucket = func(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        status = (cloudformation_json.get("Properties", {}).get("VersioningConfiguration") or {}).get(
            "Status"
        )
        if status in ("Enabled", "Suspended"):
            bucket.versioning_status = status  # what PutBucketVersioning sets
        _lock_objects(bucket, cloudformation_json.get("Properties", {}))
        return bucket

    return classmethod(create)


def _lock_objects(bucket: Any, props: dict[str, Any]) -> None:
    """Object Lock as PutObjectLockConfiguration sets it (moto's model ignores the properties)."""
    if not props.get("ObjectLockEnabled"):
        return
    bucket.object_lock_enabled = True
    retention = ((props.get("ObjectLockConfiguration") or {}).get("Rule") or {}).get("DefaultRetention") or {}
    if retention:
        bucket.default_lock_mode = retention.get("Mode")
        bucket.default_lock_days = int(retention.get("Days") or 0)
        bucket.default_lock_years = int(retention.get("Years") or 0)


def _rest_api_create(original: Any) -> Any:
    func = original.__func__

    def create(cls, /, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        api = func(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        policy = cloudformation_json.get("Properties", {}).get("Policy")
        if policy:  # what PutRestApi/UpdateRestApi store: the policy document as JSON
            api.policy = policy if isinstance(policy, str) else json.dumps(policy)
        return api

    return classmethod(create)


def _named_resource_errors(original: Any) -> Any:
    def create(logical_id, resource_json, resources_map, account_id, region_name):
        depends_on = resource_json.get("DependsOn") or []
        for dependency in [depends_on] if isinstance(depends_on, str) else depends_on:
            resources_map[dependency]  # creates it when not created yet
        try:
            return original(logical_id, resource_json, resources_map, account_id, region_name)
        except KeyError as err:
            raise RuntimeError(
                f"creating {logical_id} ({resource_json.get('Type')}) failed: KeyError {err}"
            ) from err

    return create


MODEL_MAP = Patch(
    target="moto.cloudformation.parsing.get_model_map",
    gap="CloudFormation skips resource types moto has no model for, and a Ref to them yields nothing",
    replace=_with_local_models,
    owner=__name__,
    name="local_models",
    requires=("moto.core.common_models.CloudFormationModel",),
)
KMS_KEY_TAGS = Patch(
    target="moto.kms.models.Key.create_from_cloudformation_json",
    gap=(
        "AWS::KMS::Key hands CloudFormation's {Key, Value} tags to a tagger that expects "
        "{TagKey, TagValue} (any tagged key fails), stores KeyPolicy as an object, not JSON, "
        "and creates every key ENCRYPT_DECRYPT whatever KeyUsage and KeySpec say"
    ),
    replace=_kms_key_create,
    owner=__name__,
    name="kms_key_tags",
    requires=("moto.kms.models.kms_backends",),
)
METHOD_REQUEST_MODELS = Patch(
    target="moto.apigateway.models.Method.create_from_cloudformation_json",
    gap=(
        "AWS::ApiGateway::Method drops RequestModels, RequestValidatorId and RequestParameters, "
        "which the local gateway validates bodies with"
    ),
    replace=_method_create,
    owner=__name__,
    name="method_request_models",
)
FUNCTION_PACKAGE_TYPE = Patch(
    target="moto.awslambda.models.LambdaFunction.create_from_cloudformation_json",
    gap=(
        "AWS::Lambda::Function drops PackageType, ImageConfig and Architectures: container-image "
        "functions show PackageType Zip in GetFunction and ListFunctions"
    ),
    replace=_function_create,
    owner=__name__,
    name="function_package_type",
    requires=("moto.awslambda.models.ImageConfig",),
)
BUCKET_VERSIONING = Patch(
    target="moto.s3.models.FakeBucket.create_from_cloudformation_json",
    gap=(
        "AWS::S3::Bucket ignores VersioningConfiguration and ObjectLockConfiguration: buckets "
        "declared versioned are unversioned (objects get no VersionId), locked ones unlocked"
    ),
    replace=_bucket_create,
    owner=__name__,
    name="bucket_versioning",
)
REST_API_POLICY = Patch(
    target="moto.apigateway.models.RestAPI.create_from_cloudformation_json",
    gap="AWS::ApiGateway::RestApi drops Policy, the resource policy the local gateway applies",
    replace=_rest_api_create,
    owner=__name__,
    name="rest_api_policy",
)
RESOURCE_ERRORS = Patch(
    target="moto.cloudformation.parsing.parse_and_create_resource",
    gap=(
        "an error creating a resource becomes a KeyError reported as 'Fn::GetAtt references "
        "undefined resource'; and a resource created early for another's Ref skips its DependsOn "
        "(a Stage's Deployment created before its methods)"
    ),
    replace=_named_resource_errors,
    owner=__name__,
    name="resource_errors",
)
PATCHES: tuple[Patch, ...] = (
    MODEL_MAP,
    KMS_KEY_TAGS,
    METHOD_REQUEST_MODELS,
    FUNCTION_PACKAGE_TYPE,
    BUCKET_VERSIONING,
    REST_API_POLICY,
    RESOURCE_ERRORS,
)


def install() -> None:
    """Register the filler models with moto's CloudFormation and fix its model gaps (idempotent).

    Raises
    ------
    RuntimeError
        If the moto internals this relies on moved (moto upgraded), naming the symbol.
    """
    for patch in PATCHES:
        patch.apply()
    # Skipped types are all in RESOURCE_SUPPORT; moto's per-resource warning is noise.
    warnings.filterwarnings("ignore", message="Tried to parse .* not supported by moto", category=UserWarning)
