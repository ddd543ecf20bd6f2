"""Internal Lambda extensions on the embedded local AWS: work after the response, as in Lambda."""

from __future__ import annotations

import json
import time

import pytest

from tests.local.conftest import create_fixture_function

pytestmark = pytest.mark.local


@pytest.fixture(scope="module")
def function(local_aws):
    return create_fixture_function(local_aws, "extension_handler")


def _invoke(aws, name: str, payload: dict) -> dict:
    response = aws.client("lambda").invoke(FunctionName=name, Payload=json.dumps(payload))
    assert "FunctionError" not in response, response["Payload"].read()
    return json.loads(response["Payload"].read())


def _wait_for(path, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return path.exists()


def test_deferred_work_runs_after_the_response_and_before_the_next_invocation(local_aws, function, tmp_path):
    # Given a function whose internal extension registered during init
    first = _invoke(local_aws, function, {"dir": str(tmp_path), "n": 1})
    assert first["registered"] is True
    # Then the response came back while its deferred task was still waiting for "go-1"
    assert not (tmp_path / "done-1").exists()
    (tmp_path / "go-1").write_text("")
    assert _wait_for(tmp_path / "done-1")
    assert json.loads((tmp_path / "done-1").read_text()) == {"saw_go": True}
    # And once the task is done the same environment takes the next invocation
    second = _invoke(local_aws, function, {"dir": str(tmp_path), "n": 2})
    assert second["pid"] == first["pid"]
    assert second["previous_done"] == ["done-1"]
    (tmp_path / "go-2").write_text("")
    assert _wait_for(tmp_path / "done-2")


def test_an_invocation_arriving_during_the_post_invoke_phase_gets_another_environment(
    local_aws, function, tmp_path
):
    # Given an environment still running invocation 1's deferred task
    first = _invoke(local_aws, function, {"dir": str(tmp_path), "n": 1})
    # When another invocation arrives meanwhile
    second = _invoke(local_aws, function, {"dir": str(tmp_path), "n": 2})
    # Then it runs in another environment, and neither task has finished yet
    assert second["pid"] != first["pid"]
    assert second["previous_done"] == []
    for n in (1, 2):
        (tmp_path / f"go-{n}").write_text("")
        assert _wait_for(tmp_path / f"done-{n}")


def test_registering_after_init_is_refused(local_aws, function, tmp_path):
    payload = _invoke(local_aws, function, {"dir": str(tmp_path), "n": 1})
    (tmp_path / "go-1").write_text("")
    assert payload["late_registration"] is False
    assert _wait_for(tmp_path / "done-1")
