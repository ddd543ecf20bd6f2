"""Lambda functions that run the shared runtime package ``sluice`` (one code asset for all)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.model_projects import BASE_REQUIREMENTS, ModelProject, package_name, read_pins, read_project

REPO_ROOT = Path(__file__).resolve().parents[2]
LAMBDAS_DIR = REPO_ROOT / "lambdas"
POWERTOOLS_VERSION = "3.37.0"
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64


def lambda_code() -> lambda_.Code:
    """The ``lambdas/`` source root as one zip asset, shared by every zip function."""
    return lambda_.Code.from_asset(
        str(LAMBDAS_DIR),
        exclude=["**/__pycache__", "**/*.pyc", "*.egg-info"],
    )


def image_code(
    container: str, *, cmd: list[str] | None = None, project: str | None = None
) -> lambda_.DockerImageCode:
    """The image built from ``containers/<container>/Dockerfile`` with the repo root as context.

    Only ``lambdas/`` and ``containers/`` enter the build context (and the staged asset), so the
    image hash changes with the runtime code and the Dockerfile, not with anything else in the repo.
    The image is built and pushed by ``cdk deploy``; synthesis needs no Docker engine. ``cmd``
    overrides the image's CMD (the handler), so one image serves several functions. ``project``
    (a folder relative to the repo root) also enters the context, passed as build arg ``PROJECT``.
    """
    return lambda_.DockerImageCode.from_image_asset(
        str(REPO_ROOT), platform=ecr_assets.Platform.LINUX_ARM64, cmd=cmd, **image_build(container, project)
    )


def image_build(container: str, project: str | None = None) -> dict[str, Any]:
    """The Dockerfile, build context filter and build args of an image (:func:`image_code`)."""
    included = ["lambdas", "containers", *([project] if project else [])]
    return {
        "file": f"containers/{container}/Dockerfile",
        "exclude": ["*", *(f"!{path}" for path in included), "**/__pycache__", "**/*.pyc", "**/*.egg-info"],
        "build_args": {"PROJECT": project} if project else None,
    }


#: The libraries whose version decides whether a pickled or skops-saved model loads the same.
SERVING_LIBRARIES = ("scikit-learn",)


def image_libraries(
    requirements: Path = REPO_ROOT / "containers" / "scoring" / "requirements.txt",
) -> dict[str, str]:
    """``{library: version}`` an image's requirements pin, for :data:`SERVING_LIBRARIES`."""
    pins = {package_name(name): version for name, version in read_pins(requirements).items()}
    return {name: pins[name] for name in SERVING_LIBRARIES if name in pins}


@dataclass(frozen=True)
class ModelImage:
    """One model's image: ``containers/model/Dockerfile`` with the model's project baked in.

    Sluice's base (``containers/model/requirements.txt``) plus the project's pinned requirements
    and package; the image sets ``SLUICE_PROJECT`` to the installed ``pyproject.toml``. Every
    function given this image (endpoint, batch steps, retraining steps) shares one image asset:
    the asset's hash depends on the build context and args, not on the function's ``cmd``.

    Parameters
    ----------
    project
        The project's folder relative to the repo root (a model entry's ``project``).
    """

    project: str

    @cached_property
    def declaration(self) -> ModelProject:
        """The project's checked ``[tool.sluice]`` and pins (:func:`infra.model_projects.read_project`)."""
        return read_project(self.project)

    def code(self, *, cmd: list[str]) -> lambda_.DockerImageCode:
        """The image running ``cmd`` (a handler): ``PROJECT`` build arg and folder from ``project``."""
        return image_code("model", cmd=cmd, project=self.declaration.path)

    @property
    def serving_libraries(self) -> dict[str, str]:
        """``{library: version}`` a served model's recorded libraries must equal: the base image's
        :data:`SERVING_LIBRARIES` and every library the project pins."""
        pinned = image_libraries(BASE_REQUIREMENTS)
        pinned.update({package_name(n): v for n, v in self.declaration.pins.items()})
        return pinned


class SluiceFunction(Construct):
    """A Lambda running ``sluice.handlers.<module>.lambda_handler``, as a zip or a container image.

    It runs on arm64 with X-Ray tracing and its own log group (one month retention). The zip
    flavour runs on a current Python runtime with the Powertools layer, resolved at deploy time
    from the public SSM parameter for the pinned Powertools version (no network at synth). The
    image flavour (``container``) runs ``containers/<container>/Dockerfile``, which pins its own
    dependencies, Powertools included, for work that needs more than the zip limit allows.

    Parameters
    ----------
    handler
        Module under ``sluice.handlers``, e.g. ``"registry_api"``.
    role
        Execution role. The function gets write access to its own log group only.
    environment
        Extra environment variables; ``POWERTOOLS_SERVICE_NAME`` is set from ``service``.
    container
        Name of a folder under ``containers/``: run as that image instead of a zip.
    image
        A model's image (:class:`ModelImage`): run as that image instead; takes precedence over
        ``container``. Default ``None``.
    log_key
        Customer-managed key encrypting the log group (its key policy must let
        ``logs.<region>.amazonaws.com`` use it, as :class:`~infra.constructs.data_key.DataKey`
        does). Default ``None``: CloudWatch Logs' own encryption, unless a stage-wide
        :class:`~infra.constructs.data_key.EncryptLogGroups` aspect sets one.

    Attributes
    ----------
    function, log_group
        The function and its log group.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        handler: str,
        role: iam.IRole,
        service: str,
        environment: dict[str, str] | None = None,
        memory_mb: int = 512,
        timeout_s: int = 30,
        retain_logs: bool = False,
        container: str | None = None,
        image: ModelImage | None = None,
        log_key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.ONE_MONTH,
            encryption_key=log_key,
            removal_policy=cdk.RemovalPolicy.RETAIN if retain_logs else cdk.RemovalPolicy.DESTROY,
        )
        # Settings both flavours share; each constructor checks its own keyword arguments.
        common: dict[str, Any] = dict(
            architecture=ARCHITECTURE,
            role=role,
            memory_size=memory_mb,
            timeout=cdk.Duration.seconds(timeout_s),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            environment={
                "POWERTOOLS_SERVICE_NAME": service,
                "POWERTOOLS_METRICS_NAMESPACE": "Sluice",
                **(environment or {}),
            },
        )
        entry = f"sluice.handlers.{handler}.lambda_handler"
        if image is not None or container:
            code = image.code(cmd=[entry]) if image is not None else image_code(str(container), cmd=[entry])
            self.function: lambda_.Function = lambda_.DockerImageFunction(
                self, "Function", code=code, **common
            )
        else:
            powertools_arn = (
                "{{resolve:ssm:/aws/service/powertools/python/"
                f"{ARCHITECTURE.name}/{RUNTIME.name}/{POWERTOOLS_VERSION}}}}}"
            )
            self.function = lambda_.Function(
                self,
                "Function",
                runtime=RUNTIME,
                code=lambda_code(),
                handler=entry,
                layers=[lambda_.LayerVersion.from_layer_version_arn(self, "Powertools", powertools_arn)],
                **common,
            )
        self.log_group.grant_write(role)
