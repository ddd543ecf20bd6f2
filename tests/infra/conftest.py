"""The synthesized templates, read once per session from the ``assembly_dir`` fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk.assertions import Template

from localaws.assembly import StackArtifact, read_assembly


@pytest.fixture(scope="session")
def stacks(assembly_dir: Path) -> dict[str, StackArtifact]:
    return {s.stack_name: s for s in read_assembly(assembly_dir)}


@pytest.fixture(scope="session")
def templates(stacks) -> dict[str, dict]:
    return {name: s.template for name, s in stacks.items()}


@pytest.fixture(scope="session")
def template(templates):
    """``template("Dev-Service")`` → an ``aws_cdk.assertions.Template``."""
    cache: dict[str, Template] = {}

    def get(name: str) -> Template:
        if name not in cache:
            cache[name] = Template.from_json(templates[name])
        return cache[name]

    return get


@pytest.fixture(scope="session")
def validation_report(assembly_dir: Path) -> dict:
    return json.loads((assembly_dir / "validation-report.json").read_text())


def resources_of(template: dict, type_: str) -> dict[str, dict]:
    return {k: r for k, r in template.get("Resources", {}).items() if r["Type"] == type_}


#: The session app's models (``cdk.json`` → ``infra/models.json``), the stage's default first.
SESSION_MODELS: tuple[str, ...] = tuple(
    m["name"] for m in json.loads((Path(__file__).resolve().parents[2] / "infra/models.json").read_text())
)


def model_prefix(model: str) -> str:
    """Logical-id prefix of a model's resources: none for the default (first) model, which keeps
    the stack's top-level ids; ``Model<name without '-'>`` for the others (``Model-<name>`` scope)."""
    return "" if model == SESSION_MODELS[0] else "Model" + model.replace("-", "")


def model_resources(template: dict, type_: str, model: str) -> dict[str, dict]:
    """The resources of ``type_`` built for ``model`` (see :func:`model_prefix`)."""
    others = [model_prefix(m) for m in SESSION_MODELS[1:] if m != model]
    return {
        k: r
        for k, r in resources_of(template, type_).items()
        if k.startswith(model_prefix(model)) and not any(k.startswith(p) for p in others)
    }
