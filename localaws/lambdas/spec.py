"""What a local Lambda worker runs: a function version's spec, built from moto and the template.

A :class:`FunctionSpec` holds the handler, environment, memory, timeout, log group and code
root of one function version. :class:`FunctionSpecs` builds them for a stage: zip and image
functions both run from the ``lambdas/`` source root their asset was built from (the folder
the ``sluice`` package is imported from), image functions take their handler from
``ImageConfig.Command`` or the Dockerfile's ``CMD``, and functions created through the API
run their uploaded zip. An image built with a ``PROJECT`` build arg (a model's image,
``containers/model/Dockerfile``) also gets what that Dockerfile installs: ``SLUICE_PROJECT``
naming the project's ``pyproject.toml`` in the staged asset, and the project's source root on
the worker's ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sluice
from localaws import credentials
from sluice.errors import NotFound
from sluice.models.project import PROJECT_ENV, Project

if TYPE_CHECKING:
    from localaws.env import LocalAws

LAMBDAS_ROOT = Path(sluice.__file__).resolve().parents[1]  # the lambdas/ source root
EMULATOR_ROOT = Path(__file__).resolve().parents[2]  # holds the localaws package (the worker)


@dataclass(frozen=True)
class FunctionSpec:
    """What a worker needs to run one function version."""

    name: str
    version: str
    arn: str
    handler: str
    environment: dict[str, str]
    memory_mb: int
    timeout_s: float
    log_group: str
    code_root: str
    package_type: str = "Zip"
    role: str = ""  # the execution role, whose session the worker gets
    project: str = ""  # a model image's project: its pyproject.toml (PROJECT build arg), else ""


@dataclass
class InvokeResult:
    """The outcome of one invocation, as the Lambda API reports it."""

    payload: bytes
    function_error: str | None
    executed_version: str
    request_id: str
    logs: str = ""
    pid: int = 0
    init_count: int = 0

    def json(self) -> Any:
        return json.loads(self.payload) if self.payload else None


class FunctionSpecs:
    """Specs of the functions of one local stage (template properties read once)."""

    def __init__(self, local: LocalAws) -> None:
        self.local = local
        self._template_props: dict[str, dict[str, Any]] | None = None
        self._image_assets: dict[str, tuple[Path, dict[str, Any]]] | None = None

    @property
    def state_dir(self) -> Path:
        return self.local.state_dir

    def spec_for(self, fn: Any) -> FunctionSpec:
        props = self.template_properties().get(fn.function_name, {})
        handler = fn.handler or ""
        code_root = str(LAMBDAS_ROOT)
        # moto's CloudFormation path may drop PackageType: the template says what the function is.
        package_type = props.get("PackageType") or getattr(fn, "package_type", "Zip") or "Zip"
        project = ""
        if package_type == "Image":
            handler, code_root, project = self._image_entry(fn, props)
        elif not props and getattr(fn, "code_bytes", None):
            # Created through the API rather than a template: run the uploaded zip.
            code_root = str(self._extract(fn.code_bytes))
        log_group = _log_group(props, self.local) or f"/aws/lambda/{fn.function_name}"
        return FunctionSpec(
            name=fn.function_name,
            version=str(fn.version),
            arn=fn.function_arn,
            handler=handler,
            environment={k: str(v) for k, v in (fn.environment_vars or {}).items()},
            memory_mb=int(fn.memory_size or 128),
            timeout_s=float(fn.timeout or 3),
            log_group=log_group,
            code_root=code_root,
            package_type=package_type,
            role=str(getattr(fn, "role", "") or ""),
            project=project,
        )

    def template_properties(self) -> dict[str, dict[str, Any]]:
        """Template properties of each deployed function, by physical name."""
        if self._template_props is None:
            found: dict[str, dict[str, Any]] = {}
            for stack, deployed in zip(self.local.stacks, self.local.deployed, strict=False):
                template = stack.template["Resources"]
                for resource in deployed.resources:
                    if resource.resource_type == "AWS::Lambda::Function":
                        found[resource.physical_id] = template[resource.logical_id].get("Properties", {})
            self._template_props = found
        return self._template_props

    def _extract(self, code: bytes) -> Path:
        target = self.state_dir / "code" / hashlib.sha256(code).hexdigest()[:16]
        if not target.is_dir():
            staging = target.with_name(target.name + f".{uuid.uuid4().hex[:6]}")
            with zipfile.ZipFile(io.BytesIO(code)) as archive:
                archive.extractall(staging)
            try:
                staging.rename(target)
            except OSError:  # another invocation extracted it first
                shutil.rmtree(staging, ignore_errors=True)
        return target

    def _image_entry(self, fn: Any, props: dict[str, Any]) -> tuple[str, str, str]:
        """The handler, code root and project (``pyproject.toml``, or ``""``) of an image function."""
        command = list(getattr(getattr(fn, "image_config", None), "command", None) or [])
        command = command or list((props.get("ImageConfig") or {}).get("Command") or [])
        asset = self._image_asset((props.get("Code") or {}).get("ImageUri", ""))
        directory, source = asset if asset is not None else (None, {})
        if not command and directory is not None:
            command = _dockerfile_cmd(directory / source.get("dockerFile", "Dockerfile"))
        if not command:
            raise NotFound(
                f"function {fn.function_name}: no handler in ImageConfig.Command or the Dockerfile CMD"
            )
        # The model image COPYs the PROJECT folder of its build context and points SLUICE_PROJECT there.
        project = (source.get("dockerBuildArgs") or {}).get("PROJECT")
        pyproject = str(directory / project / "pyproject.toml") if directory and project else ""
        # The image COPYs lambdas/; run the source root it was built from.
        return command[0], str(LAMBDAS_ROOT), pyproject

    def _image_asset(self, image_uri: Any) -> tuple[Path, dict[str, Any]] | None:
        """The staged build context of an image function's asset, and the asset's ``source``."""
        if self._image_assets is None:
            self._image_assets = _image_assets(self.local)
        if isinstance(image_uri, dict) and "Fn::Sub" in image_uri:  # the template's unresolved form
            image_uri = (
                image_uri["Fn::Sub"][0] if isinstance(image_uri["Fn::Sub"], list) else image_uri["Fn::Sub"]
            )
        tag = image_uri.rsplit(":", 1)[-1] if isinstance(image_uri, str) else ""
        if not tag:  # no tag to match: the stage's first image
            return next(iter(self._image_assets.values()), None)
        return self._image_assets.get(tag)

    def worker_environment(self, spec: FunctionSpec, log_stream: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "SYSTEMROOT")
        }
        project_path: list[str] = []
        if spec.project:  # what the model image's Dockerfile sets and installs
            env[PROJECT_ENV] = spec.project
            project_path.append(str(Project.from_pyproject(spec.project).source_root))
        env.update(spec.environment)
        env.update(
            {
                "AWS_ENDPOINT_URL": self.local.endpoint_url,
                **credentials.function_environment(self.local, spec.role, spec.name),
                "AWS_REGION": self.local.region,
                "AWS_DEFAULT_REGION": self.local.region,
                "AWS_EXECUTION_ENV": "AWS_Lambda_python_local",
                "AWS_LAMBDA_FUNCTION_NAME": spec.name,
                "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
                "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group,
                "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
                "LAMBDA_TASK_ROOT": spec.code_root,
                "PYTHONPATH": os.pathsep.join([str(LAMBDAS_ROOT), *project_path, str(EMULATOR_ROOT)]),
                "_HANDLER": spec.handler,
                "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "SLUICE_LOCAL": "1",
            }
        )
        return env


def _log_group(props: dict[str, Any], local: LocalAws) -> str | None:
    group = (props.get("LoggingConfig") or {}).get("LogGroup")
    if isinstance(group, str):
        return group
    if isinstance(group, dict) and "Ref" in group:
        for resource in local.resources:
            if resource.logical_id == group["Ref"]:
                return resource.physical_id
    return None


def _image_assets(local: LocalAws) -> dict[str, tuple[Path, dict[str, Any]]]:
    """``{image tag: (staged build context, asset source)}`` of the stage's Docker image assets."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for stack in local.stacks:
        if stack.assets_path is None:
            continue
        manifest = json.loads(stack.assets_path.read_text())
        for asset in manifest.get("dockerImages", {}).values():
            source = asset["source"]
            directory = (stack.assets_path.parent / source.get("directory", ".")).resolve()
            for destination in asset.get("destinations", {}).values():
                found.setdefault(str(destination.get("imageTag", "")), (directory, source))
    return found


def _dockerfile_cmd(dockerfile: Path) -> list[str]:
    if not dockerfile.is_file():
        return []
    command: list[str] = []
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"\s*CMD\s+(.*)$", line)
        if match:
            text = match.group(1).strip()
            command = json.loads(text) if text.startswith("[") else text.split()
    return command
