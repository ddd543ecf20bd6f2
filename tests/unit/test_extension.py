"""sluice.serving.extension against the Extensions API the local worker serves (in-process here)."""

from __future__ import annotations

import threading
import time

import pytest

from localaws.lambdas.extensions_api import ExtensionsApi
from sluice.serving.extension import AfterResponse


@pytest.fixture
def api(monkeypatch):
    api = ExtensionsApi()
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", api.address)
    return api


def _invoke(api: ExtensionsApi, request_id: str) -> None:
    api.invoke(
        {"request_id": request_id, "invoked_arn": "arn:aws:lambda:eu-west-1:1:function:f"},
        time.time() * 1000 + 5000,
    )


def test_outside_a_lambda_runtime_there_is_no_extension(monkeypatch):
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    assert AfterResponse.start("x") is None


def test_an_unreachable_api_means_no_extension(monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")  # discard port: nothing listens
    assert AfterResponse.start("x") is None


def test_tasks_run_after_done_and_a_failing_task_does_not_stop_the_extension(api):
    extension = AfterResponse.start("capture")
    assert extension is not None and extension.extension_id
    api.end_init()
    ran: list[str] = []
    gate = threading.Event()

    def failing() -> None:
        raise RuntimeError("boom")

    # Invocation 1: tasks wait for done()
    _invoke(api, "r1")
    extension.defer(failing)
    extension.defer(lambda: (gate.wait(5), ran.append("r1")))
    assert not api.wait_idle(time.time() * 1000 + 50)  # the extension holds the environment
    extension.done()
    gate.set()
    assert api.wait_idle(time.time() * 1000 + 5000)
    assert ran == ["r1"] and extension.failures == 1
    # Invocation 2: the extension still serves
    _invoke(api, "r2")
    extension.defer(lambda: ran.append("r2"))
    extension.done()
    assert api.wait_idle(time.time() * 1000 + 5000)
    assert ran == ["r1", "r2"] and extension.invocations == 2


def test_registration_rules(api):
    assert api.register("x", b'{"events": ["INVOKE", "SHUTDOWN"]}')[0] == 400  # internal: no SHUTDOWN
    assert api.register("", b'{"events": ["INVOKE"]}')[0] == 400
    assert api.register("x", b"not json")[0] == 400
    assert api.register("x", b'{"events": ["INVOKE"]}')[0] == 200
    api.end_init(timeout_s=0.05)
    assert api.register("y", b'{"events": ["INVOKE"]}')[0] == 403  # after init
    assert api.next("unknown-id")[0] == 403


def test_a_dropped_connection_is_retried_not_fatal(monkeypatch):
    # A registered extension that stopped asking for events would hold every later invocation
    extension = AfterResponse("127.0.0.1:9", "capture")
    answers: list = [ConnectionResetError("reset"), ConnectionResetError("reset"), {"eventType": "INVOKE"}]

    def next_event():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(extension, "next_event", next_event)
    monkeypatch.setattr("sluice.serving.extension.time.sleep", lambda s: None)
    assert extension._next_event_retrying() == {"eventType": "INVOKE"} and answers == []
    # and it gives up (the thread ends; later work runs inline) only after its attempts
    answers[:] = [ConnectionResetError("reset")] * 3
    with pytest.raises(ConnectionResetError):
        extension._next_event_retrying(attempts=3)


def test_when_idle_waits_for_every_extension_to_poll_again(api):
    extension = AfterResponse.start("capture")
    api.end_init()
    freed: list[str] = []
    # Right after init the environment is idle: the callback runs at once
    api.when_idle(lambda: freed.append("init"))
    assert freed == ["init"]
    # During an invocation's post-response work it waits until the extension polls again
    gate = threading.Event()
    _invoke(api, "r1")
    extension.defer(lambda: gate.wait(5))
    extension.done()
    api.when_idle(lambda: freed.append("r1"))
    assert freed == ["init"]
    gate.set()
    assert api.wait_idle(time.time() * 1000 + 5000)
    deadline = time.monotonic() + 5
    while freed != ["init", "r1"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert freed == ["init", "r1"]
    # and a callback still pending can be taken back (the environment went away)
    _invoke(api, "r2")
    api.when_idle(lambda: freed.append("r2"))
    assert api.cancel_idle() is not None and api.cancel_idle() is None
    extension.done()
