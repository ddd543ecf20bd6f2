"""Every REST API method with a body is validated against its model whatever the content type.

API Gateway validates a body against the model of the request's content type, else the
``$default`` one, else not at all: a model under ``application/json`` alone lets the same body
through as ``text/plain``. So each method with request models has ``$default`` too, the same
model, and a validator that validates bodies.
"""

from __future__ import annotations

import pytest

from tests.infra.conftest import SESSION_MODELS, resources_of

BODY_METHODS = {"POST", "PUT", "PATCH"}


def _methods(templates: dict[str, dict]) -> list[tuple[str, str, dict]]:
    return [
        (stack, logical_id, method["Properties"])
        for stack, template in templates.items()
        for logical_id, method in resources_of(template, "AWS::ApiGateway::Method").items()
    ]


def test_every_method_with_a_request_model_has_it_under_default_too(templates):
    methods = [m for m in _methods(templates) if m[2].get("RequestModels")]
    # The endpoint's POST /predict, the registry's approve and reject, and POST /labels, per stage
    assert len(methods) >= 4 * 2
    for stack, logical_id, props in methods:
        models = props["RequestModels"]
        assert "$default" in models, f"{stack}/{logical_id}: no $default request model"
        assert models["$default"] == models["application/json"], f"{stack}/{logical_id}"


def test_every_method_with_a_body_has_a_body_validator_and_a_model(templates):
    validators = {
        logical_id
        for template in templates.values()
        for logical_id, v in resources_of(template, "AWS::ApiGateway::RequestValidator").items()
        if v["Properties"].get("ValidateRequestBody")
    }
    methods = [m for m in _methods(templates) if m[2]["HttpMethod"] in BODY_METHODS]
    assert methods
    for stack, logical_id, props in methods:
        assert props.get("RequestModels"), (
            f"{stack}/{logical_id}: {props['HttpMethod']} without a request model"
        )
        assert props["RequestValidatorId"]["Ref"] in validators, f"{stack}/{logical_id}"


@pytest.mark.parametrize("stage", ["Dev", "Prod"])
def test_the_labels_function_takes_labels_for_the_stage_models_only(templates, stage):
    template = templates[f"{stage}-Service"]
    functions = resources_of(template, "AWS::Lambda::Function").values()
    (labels,) = [
        f
        for f in functions
        if "SLUICE_LABEL_MODELS" in f["Properties"].get("Environment", {}).get("Variables", {})
    ]
    assert labels["Properties"]["Environment"]["Variables"]["SLUICE_LABEL_MODELS"] == ",".join(SESSION_MODELS)
