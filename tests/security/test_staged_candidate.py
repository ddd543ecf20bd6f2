"""Threat: a writer of the work bucket swaps the staged candidate between train and evaluate.

``candidate.joblib`` is a pickle: loading it runs whatever it was made to run. The train step
records its sha256 in the execution state (written only by the state machine), and the evaluate
and register steps load it only if the bucket still holds those bytes.
"""

from __future__ import annotations

import io
import os

import boto3
import joblib
import pytest

from sluice.errors import IntegrityError
from sluice.pipelines import retraining
from tests.unit.test_retraining import DATA, WORK, env  # noqa: F401  (the fixture)


class _Payload:
    """Unpickling it creates a file: stands for any code an attacker's pickle would run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _stage_through_train(settings, registry, run_id: str) -> dict:
    request = retraining.RetrainRequest("credit-risk", DATA, run_id)
    state = retraining.preprocess(settings, request, registry=registry)
    return retraining.train_candidate(settings, state, registry=registry)


@pytest.mark.parametrize("step", ["evaluate", "register"])
def test_a_swapped_candidate_is_refused_before_it_is_unpickled(env, tmp_path, step):  # noqa: F811
    # Given a run whose train step staged its candidate and recorded its digest
    settings, registry = env
    state = _stage_through_train(settings, registry, f"swap-{step}")
    assert len(state["candidate_sha256"]) == 64
    # When someone with write access to the work bucket replaces it with a malicious pickle
    marker = tmp_path / "unpickled"
    buffer = io.BytesIO()
    joblib.dump(_Payload(str(marker)), buffer)
    key = f"retraining/credit-risk/swap-{step}/candidate.joblib"
    boto3.client("s3").put_object(Bucket=WORK, Key=key, Body=buffer.getvalue())
    # Then the next step refuses it, naming the object, and never unpickles it
    with pytest.raises(IntegrityError, match="does not match the digest the train step recorded"):
        getattr(retraining, step)(settings, state, registry=registry)
    assert not marker.exists()
    assert [r.version for r in registry.list_versions("credit-risk")] == [1]


def test_a_state_without_the_digest_is_refused(env):  # noqa: F811
    settings, registry = env
    state = _stage_through_train(settings, registry, "no-digest")
    state.pop("candidate_sha256")
    with pytest.raises(IntegrityError):
        retraining.evaluate(settings, state, registry=registry)


def test_the_untouched_candidate_still_evaluates(env):  # noqa: F811
    settings, registry = env
    state = _stage_through_train(settings, registry, "honest")
    evaluated = retraining.evaluate(settings, state, registry=registry)
    assert evaluated["comparison"]["challenger"]
