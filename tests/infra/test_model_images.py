"""One image per model project (issue 15): ``containers/model/Dockerfile`` with the project baked in.

The session's app serves ``credit-decisions`` from its project ``examples/credit_decisions``
(``infra/models.json``): its endpoint, both batch pipelines' steps and its retraining steps run
that model's image, while ``credit-risk`` keeps the zip endpoint and the training image.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from infra.constructs.runtime import ModelImage
from infra.model_projects import base_pins, package_name, read_pins
from tests.infra.conftest import SESSION_MODELS, model_resources

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "containers" / "model"
PROJECT = "examples/credit_decisions"
SERVICE = ["Dev-Service", "Prod-Service"]
#: Handlers of the per-model image functions: endpoint, batch steps (two pipelines), retraining.
MODEL_HANDLERS = {"score", "batch_preprocess", "batch_score", "batch_postprocess", "batch_notify", "retrain"}


def image_assets(stacks, stack: str) -> dict[str, dict]:
    """``{image tag: asset source}`` of the stack's Docker image assets."""
    manifest = json.loads(stacks[stack].assets_path.read_text())
    return {
        destination["imageTag"]: asset["source"]
        for asset in manifest["dockerImages"].values()
        for destination in asset["destinations"].values()
    }


def image_functions(templates, stack: str, model: str) -> dict[str, tuple[str, str]]:
    """``{handler module: (image tag, logical id)}`` of the model's image functions."""
    found = {}
    for logical_id, function in model_resources(templates[stack], "AWS::Lambda::Function", model).items():
        props = function["Properties"]
        if props.get("PackageType") != "Image":
            continue
        uri = props["Code"]["ImageUri"]["Fn::Sub"]
        (handler,) = props["ImageConfig"]["Command"]
        module = handler.removeprefix("sluice.handlers.").removesuffix(".lambda_handler")
        assert module not in found or found[module][0] == uri.rsplit(":", 1)[1], logical_id
        found[module] = (uri.rsplit(":", 1)[1], logical_id)
    return found


def test_the_session_serves_a_project_model():
    assert SESSION_MODELS == ("credit-risk", "credit-decisions")


@pytest.mark.parametrize("stack", SERVICE)
def test_the_project_models_functions_run_its_own_image(stacks, templates, stack):
    # Given the credit-decisions model's image functions and the stack's image assets
    functions = image_functions(templates, stack, "credit-decisions")
    assets = image_assets(stacks, stack)
    # Then its endpoint, batch steps and retraining steps all run one image...
    assert set(functions) == MODEL_HANDLERS
    (tag,) = {tag for tag, _ in functions.values()}
    # ...built from containers/model/Dockerfile with the project as build arg, on arm64
    assert assets[tag]["dockerFile"] == "containers/model/Dockerfile"
    assert assets[tag]["dockerBuildArgs"] == {"PROJECT": PROJECT}
    assert assets[tag]["platform"] == "linux/arm64"


@pytest.mark.parametrize("stack", SERVICE)
def test_the_demo_models_functions_are_unchanged(stacks, templates, stack):
    # Given credit-risk's image functions (its endpoint is the zip flavour)
    functions = image_functions(templates, stack, "credit-risk")
    assets = image_assets(stacks, stack)
    # Then its batch and retraining steps run the training image, with no project
    # + the stage's drift job and its fan-out steps
    assert set(functions) == MODEL_HANDLERS - {"score"} | {"monitor", "drift_fanout"}
    for tag, logical_id in functions.values():
        assert assets[tag]["dockerFile"] == "containers/training/Dockerfile", logical_id
        assert "dockerBuildArgs" not in assets[tag]
    zip_endpoint = templates[stack]["Resources"][
        next(
            k
            for k in model_resources(templates[stack], "AWS::Lambda::Function", "credit-risk")
            if "Endpoint" in k
        )
    ]
    assert zip_endpoint["Properties"]["Handler"] == "sluice.handlers.score.lambda_handler"


def test_the_staged_build_context_holds_the_runtime_and_the_project_only(stacks):
    # Given the staged build context of the model's image
    (source,) = [s for s in image_assets(stacks, "Dev-Service").values() if "dockerBuildArgs" in s]
    context = (stacks["Dev-Service"].assets_path.parent / source["directory"]).resolve()
    # Then it holds lambdas/, containers/ and the project folder, nothing else of the repo
    assert {p.name for p in context.iterdir()} == {"lambdas", "containers", "examples", ".dockerignore"}
    assert [p.name for p in (context / "examples").iterdir()] == ["credit_decisions"]
    assert (context / PROJECT / "pyproject.toml").is_file()
    assert (context / PROJECT / "src" / "credit_decisions").is_dir()
    assert not list(context.rglob("__pycache__"))
    # And the model Dockerfile's own ignore file (BuildKit reads it instead of the root one,
    # which would leave the project out of the build)
    assert (context / "containers" / "model" / "Dockerfile.dockerignore").is_file()


@pytest.mark.parametrize("stack", SERVICE)
def test_the_project_endpoint_is_checked_against_its_images_libraries(templates, stack):
    # Given the credit-decisions endpoint (container flavour)
    (endpoint,) = [
        f["Properties"]
        for f in model_resources(templates[stack], "AWS::Lambda::Function", "credit-decisions").values()
        if f["Properties"].get("ImageConfig", {}).get("Command") == ["sluice.handlers.score.lambda_handler"]
    ]
    variables = endpoint["Environment"]["Variables"]
    # Then deploy compares a fitted model's libraries with the model image's pins: the base's
    # scikit-learn and every library the project pins
    libraries = json.loads(variables["SLUICE_SERVING_LIBRARIES"])
    project = read_pins(ROOT / PROJECT / "requirements.txt")
    assert libraries == {
        "scikit-learn": base_pins()["scikit-learn"],
        **{package_name(n): v for n, v in project.items()},
    }
    assert variables["SLUICE_MODEL_FLAVOUR"] == "sklearn"
    assert endpoint["MemorySize"] == 2048
    assert ModelImage(PROJECT).serving_libraries == libraries


def test_model_dockerfile_installs_the_project_on_the_pinned_base():
    dockerfile = (MODEL_DIR / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    assert base.startswith("public.ecr.aws/lambda/python:3.14") and base.endswith("-arm64")
    assert "FROM ${BASE_IMAGE}" in dockerfile
    assert re.search(r"^ARG PROJECT$", dockerfile, re.M)
    # Sluice's base: the hashed lock, wheels only
    assert "--require-hashes --only-binary=:all: -r /opt/sluice-base/requirements-hashed.txt" in dockerfile
    assert "COPY lambdas/ ${LAMBDA_TASK_ROOT}/" in dockerfile
    # The project: copied, its pinned requirements as wheels within the base's pins, itself without deps
    assert "COPY ${PROJECT}/ /opt/sluice-project/" in dockerfile
    assert "--only-binary=:all: -c /opt/sluice-base/requirements.txt" in dockerfile
    assert "pip install --no-cache-dir --no-deps /opt/sluice-project" in dockerfile
    assert "ENV SLUICE_PROJECT=/opt/sluice-project/pyproject.toml" in dockerfile
    assert "python -m compileall" in dockerfile
    assert 'CMD ["sluice.handlers.score.lambda_handler"]' in dockerfile


def _normalized(pins: dict[str, str]) -> dict[str, str]:
    return {package_name(name): version for name, version in pins.items()}


def test_model_image_requirements_equal_the_other_images_and_the_lock():
    image = _normalized(read_pins(MODEL_DIR / "requirements.txt"))
    # Every pin the training, scoring and dev requirements share with it is the same version
    for other in (
        "containers/training/requirements.txt",
        "containers/scoring/requirements.txt",
        "requirements.txt",
    ):
        pins = _normalized(read_pins(ROOT / other)) if other != "requirements.txt" else _dev_pins()
        for package in image.keys() & pins.keys():
            assert image[package] == pins[package], (other, package)
    # It carries everything the training image does, plus skops for fitted scikit-learn models
    assert _normalized(read_pins(ROOT / "containers/training/requirements.txt")).keys() <= image.keys()
    assert {"skops", "pandas", "scikit-learn", "pyarrow"} <= image.keys()
    # And the hashed lock pins exactly these versions, each with hashes
    locked = {
        package_name(m.group(1)): m.group(2)
        for m in re.finditer(
            r"^([A-Za-z0-9._-]+)==(\S+) \\$", (MODEL_DIR / "requirements-hashed.txt").read_text(), re.M
        )
    }
    assert locked == image


def _dev_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, _, version = line.split("#", 1)[0].strip().partition("==")
        if version:
            pins[package_name(name.split("[")[0])] = version.strip()
    return pins


def test_the_example_projects_pins_equal_the_base_images():
    base = base_pins()
    for name, version in read_pins(ROOT / PROJECT / "requirements.txt").items():
        assert base.get(package_name(name), version) == version, name
