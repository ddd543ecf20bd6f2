"""Single flight on the embedded local AWS: duplicate drift alarm events start one retraining.

A module of its own, so its stage (and the trigger's per-model lock) is fresh: the other
retraining module's run holds the lock for the rest of its debounce window.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from localaws.events import router as local_events

MODEL = "credit-risk"


def _alarm_event(local_aws, alarm: str) -> dict:
    """The "CloudWatch Alarm State Change" event CloudWatch sends when ``alarm`` enters ALARM."""
    arn = f"arn:aws:cloudwatch:{local_aws.region}:{local_aws.account}:alarm:{alarm}"
    detail = {
        "alarmName": alarm,
        "state": {
            "value": "ALARM",
            "reason": "Threshold Crossed",
            "timestamp": datetime.now(UTC).isoformat(),
        },
        "previousState": {"value": "OK"},
    }
    return {
        "Source": "aws.cloudwatch",
        "DetailType": "CloudWatch Alarm State Change",
        "Resources": [arn],
        "Detail": json.dumps(detail),
    }


def test_two_alarm_events_a_second_apart_start_exactly_one_run(local_aws):
    # Given the dev stage's drift rule, trigger function and retraining state machine
    machine = local_aws.physical_id(
        "RetrainingStateMachine", resource_type="AWS::StepFunctions::StateMachine"
    )
    trigger = local_aws.physical_id("RetrainingTriggerFunction", resource_type="AWS::Lambda::Function")
    events, sfn = local_aws.client("events"), local_aws.client("stepfunctions")
    router = local_events.active_router()
    # When the drift-share alarm's state change arrives twice, 1 s apart (a flapping alarm, or
    # the data-drift and concept-drift alarms firing together)
    for _ in range(2):
        sent = events.put_events(Entries=[_alarm_event(local_aws, f"sluice-dev-{MODEL}-drift-share")])
        assert sent["FailedEntryCount"] == 0
        time.sleep(1.0)
    assert router.wait_idle(timeout=30)
    # Then the rule delivered both to the trigger, and both invocations finished ...
    deliveries = router.deliveries_to(f":function:{trigger}")
    assert len(deliveries) == 2 and all(d.ok for d in deliveries)
    deadline = time.monotonic() + 60
    while sum(w.invocations for w in local_aws.runtime.workers(trigger)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sum(w.invocations for w in local_aws.runtime.workers(trigger)) == 2
    # ... but exactly one retraining execution started
    executions = sfn.list_executions(stateMachineArn=machine)["executions"]
    assert len(executions) == 1, [e["name"] for e in executions]
    assert executions[0]["name"].startswith(MODEL)
