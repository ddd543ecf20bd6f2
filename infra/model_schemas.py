"""The committed schemas of each served model, under ``infra/schemas/``: what the CDK app knows of a model.

``<model>.json``
    The model's ``FeatureSchema.to_dict()``: its feature names give the monitoring's
    per-feature drift alarms.
``<model>.request.json``
    The JSON Schema (draft-04) of a scoring request, generated from the feature schema by the
    runtime (``FeatureSchema.to_json_schema(max_instances=MAX_INSTANCES)``): the endpoint's
    API Gateway request model. ``tests/infra/test_model_schemas.py`` checks it is up to date
    and regenerates it.

Both are plain JSON read at synth time, so ``cdk synth`` needs no runtime dependency. Every
model a stage serves (``sluice:models``) must have both: :mod:`infra.config` refuses a model
whose files are missing with one line naming the file, since without them its alarms would
watch no feature of its own and its API would check only the request envelope. Each model's
files are its own: two models of one stage get their alarms and request models from their own
schemas, never from the other's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"


def feature_schema_path(model_name: str) -> Path:
    return SCHEMAS_DIR / f"{model_name}.json"


def request_schema_path(model_name: str) -> Path:
    return SCHEMAS_DIR / f"{model_name}.request.json"


def load_feature_schema(model_name: str) -> dict[str, Any] | None:
    """``infra/schemas/<model>.json`` (a ``FeatureSchema.to_dict()``) if the repo has one, else ``None``."""
    return _load(feature_schema_path(model_name))


def load_request_schema(model_name: str) -> dict[str, Any] | None:
    """``infra/schemas/<model>.request.json`` (the request JSON Schema) if the repo has one, else ``None``."""
    return _load(request_schema_path(model_name))


def feature_names(model_name: str) -> tuple[str, ...]:
    """The features of the model's committed feature schema, in its order; none without one."""
    schema = load_feature_schema(model_name)
    if schema is None:
        return ()
    return tuple(str(feature["name"]) for feature in schema["features"])


def _load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
