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


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_rest_api_stages_are_named_after_the_sluice_stage(templates, stage):
    _, service = stage_stack_names(stage)
    stages = [
        r["Properties"]["StageName"]
        for r in templates[service]["Resources"].values()
        if r["Type"] == "AWS::ApiGateway::Stage"
    ]
    assert stages and set(stages) == {stage}
