"""``AWS::StepFunctions::StateMachine`` from CloudFormation, created in moto's executing backend.

moto's CloudFormation creates state machines in its non-executing backend and reads only
``DefinitionString``. These replacements of ``StateMachine``'s CloudFormation methods create,
update and delete them in the parser backend, with ``Definition`` and
``DefinitionSubstitutions`` applied. A definition moto cannot parse still deploys (AWS would
accept it): it is listed in :data:`UNPARSEABLE`, and starting it fails with InvalidDefinition.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from localaws.patches import moto_symbol

logger = logging.getLogger(__name__)

#: State machines created from CloudFormation although moto cannot parse them: ARN -> error.
UNPARSEABLE: dict[str, str] = {}


def _parser_backend(account_id: str, region_name: str) -> Any:
    backends = moto_symbol("moto.stepfunctions.parser.models.stepfunctions_parser_backends", owner=__name__)
    return backends[account_id][region_name]


def _definition(properties: dict[str, Any]) -> str:
    definition = properties.get("DefinitionString")
    if definition is None and properties.get("Definition") is not None:
        definition = json.dumps(properties["Definition"])
    definition = definition or ""
    for key, value in (properties.get("DefinitionSubstitutions") or {}).items():
        definition = definition.replace("${" + key + "}", str(value))
    return definition


def cfn_create(
    cls: Any, /, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
) -> Any:
    cfn_to_api_tags = moto_symbol("moto.stepfunctions.utils.cfn_to_api_tags", owner=__name__)
    properties = cloudformation_json["Properties"]
    backend = _parser_backend(account_id, region_name)
    args = (
        properties.get("StateMachineName", resource_name),
        _definition(properties),
        properties.get("RoleArn", ""),
    )
    kwargs = {
        "tags": cfn_to_api_tags(properties.get("Tags", [])),
        "sm_type": properties.get("StateMachineType"),
    }
    try:
        return backend.create_state_machine(*args, **kwargs)
    except Exception as err:
        if type(err).__name__ != "InvalidDefinition":
            raise
        # Deploy anyway, as AWS would have accepted it; executions of this machine fail.
        plain_create = moto_symbol("moto.stepfunctions.models.StepFunctionBackend", owner=__name__).create_state_machine
        machine = plain_create(backend, *args, **kwargs)
        UNPARSEABLE[machine.arn] = str(err)
        logger.warning("state machine %s cannot be interpreted locally: %s", machine.arn, err)
        return machine


def cfn_delete(
    cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str
) -> None:
    backend = _parser_backend(account_id, region_name)
    arn = resource_name
    if not arn.startswith("arn:"):
        found = next((sm for sm in backend.state_machines if sm.name == resource_name), None)
        if found is None:
            return
        arn = found.arn
    backend.delete_state_machine(arn)


def cfn_update(
    cls: Any,
    original_resource: Any,
    new_resource_name: str,
    cloudformation_json: Any,
    account_id: str,
    region_name: str,
) -> Any:
    cfn_to_api_tags = moto_symbol("moto.stepfunctions.utils.cfn_to_api_tags", owner=__name__)
    properties = cloudformation_json.get("Properties", {})
    name = properties.get("StateMachineName", original_resource.name)
    if name != original_resource.name:
        new = cfn_create(cls, name, cloudformation_json, account_id, region_name)
        cfn_delete(cls, original_resource.arn, cloudformation_json, account_id, region_name)
        return new
    backend = _parser_backend(account_id, region_name)
    machine = backend.update_state_machine(
        original_resource.arn,
        definition=_definition(properties) or None,
        role_arn=properties.get("RoleArn"),
    )
    backend.tagger.tag_resource(machine.arn, cfn_to_api_tags(properties.get("Tags", [])))
    return machine


def wrap_start(original: Any) -> Any:
    def start_execution(self: Any, state_machine_arn: str, *args: Any, **kwargs: Any) -> Any:
        # An execution moto cannot parse would stay RUNNING forever; say so instead.
        error = UNPARSEABLE.get(":".join(str(state_machine_arn).split(":")[:7]))
        if error is not None:
            aws_error = moto_symbol("moto.core.exceptions.AWSError", owner=__name__)
            raise aws_error(
                f"the embedded local AWS cannot interpret {state_machine_arn} "
                f"(moto's ASL grammar: {error}); see localaws.stepfunctions.execution.GAPS",
                exception_type="InvalidDefinition",
            )
        return original(self, state_machine_arn, *args, **kwargs)

    return start_execution
