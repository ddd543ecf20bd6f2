"""Each stage's stacks export the outputs ``sluice --stage`` reads, and its APIs live under its name."""

from __future__ import annotations

import pytest

from sluice.names import STAGE_OUTPUTS, stage_stack_names


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_stage_output_the_cli_reads_is_declared(templates, stage):
    # Given the stage's two stacks
    outputs = {}
    for stack in stage_stack_names(stage):
        outputs.update(templates[stack].get("Outputs", {}))
    # Then every name the CLI maps to a setting is an output, under that exact logical id
    assert set(STAGE_OUTPUTS) <= set(outputs)
    assert outputs["ModelName"]["Value"] == "credit-risk"
    # And Models lists the stage's one model (cdk.json's default) with the same endpoint
    parts = outputs["Models"]["Value"]["Fn::Join"][1]
    assert parts[0].startswith('{"credit-risk":{"url":"https://')
    assert outputs["EndpointFunction"]["Value"] in parts


def test_every_stage_output_has_its_own_environment_variable():
    # The CLI sets one variable per output: two outputs sharing one would overwrite each other
    assert len(set(STAGE_OUTPUTS.values())) == len(STAGE_OUTPUTS)
    assert STAGE_OUTPUTS["Models"] == "SLUICE_STAGE_MODELS"


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_rest_api_stages_are_named_after_the_sluice_stage(templates, stage):
    _, service = stage_stack_names(stage)
    stages = [
        r["Properties"]["StageName"]
        for r in templates[service]["Resources"].values()
        if r["Type"] == "AWS::ApiGateway::Stage"
    ]
    assert stages and set(stages) == {stage}
