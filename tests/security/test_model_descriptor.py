"""A version's descriptor (``model.json``) is signed like every artifact: editing it loads nothing.

The descriptor decides how the model file is deserialised (skops with a trusted-types list, or
joblib, which unpickles). A table writer who points the version at an edited copy that trusts
the attacker's type is stopped by the manifest signature before the model file is loaded.
"""

from __future__ import annotations

import json

import pytest
from moto import mock_aws

from sluice.errors import IntegrityError, SluiceError
from sluice.registry.bundle import DESCRIPTOR_ARTIFACT
from sluice.registry.lineage import Lineage
from tests.security.test_signed_artifacts import ALICE, _swap_artifact
from tests.unit.test_model_contract import fitted_pipeline, sklearn_bundle
from tests.unit.test_registry import create_registry_resources


@pytest.fixture
def registry():
    with mock_aws():
        yield create_registry_resources()


def test_an_edited_descriptor_is_caught_before_the_model_file_is_read(registry):
    # Given a pipeline with the user's own transformer, registered without trusting it, and approved
    pipeline, features = fitted_pipeline(600, custom=True)
    record = registry.register("custom", sklearn_bundle(pipeline, features, trusted=[]), lineage=Lineage())
    registry.approve("custom", record.version, actor=ALICE)
    with pytest.raises(SluiceError, match="skops_trusted"):
        registry.load("custom", version=record.version)
    # When a table writer rewrites model.json to trust the type
    descriptor = json.loads(registry.fetch("custom", record.version, DESCRIPTOR_ARTIFACT))
    trusting = {**descriptor, "skops_trusted": ["tests.unit.test_model_contract.Doubler"]}
    _swap_artifact("custom", record.version, DESCRIPTOR_ARTIFACT, json.dumps(trusting).encode())
    # Then the manifest signature refuses the version before anything is deserialised
    with pytest.raises(IntegrityError, match="manifest signature does not verify"):
        registry.load("custom", version=record.version)
    with pytest.raises(IntegrityError, match="approval signature does not verify"):
        registry.require_deployable("custom", record.version)
