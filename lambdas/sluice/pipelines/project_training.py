"""Retraining with the deployed model project's own code (``[tool.sluice]`` ``preprocess`` and ``train``).

:class:`ProjectTrainer` is the :class:`~sluice.pipelines.trainers.Trainer` of an image whose
project declares ``train`` (:func:`~sluice.pipelines.retraining.deployed_trainer`). Per step:

split
    The project's ``preprocess(frame)`` (if declared), then the built-in's split: the same holdout
    fraction and seed, stratified on the project's ``target`` when the champion is a classifier.
fit
    ``train(train_part, hyperparameters)`` with the champion's recorded hyperparameters (its
    record's, i.e. its final step's JSON-able ``get_params(deep=False)``). The model must predict
    the holdout rows. It is staged in the skops format when skops holds it with types from
    scikit-learn, numpy, scipy and the project's package only, and predicts the holdout as the
    original does; otherwise with joblib. Either way the train step records its sha256.
parent_metrics
    The champion through the served-model contract (:func:`~sluice.models.contract.served_model`)
    on the same holdout rows, validated against its schema.
bundle
    What ``sluice models register --model`` registers (:func:`~sluice.models.imports.bundle_fitted`):
    ``model.json``, the schema and drift baseline of the training partition, the model file; the
    metrics are the holdout's.
"""

from __future__ import annotations

import io
import json
import os
from importlib import import_module
from typing import TYPE_CHECKING, Any

import numpy as np

from sluice.errors import SluiceError
from sluice.pipelines.trainers import (
    JOBLIB_CANDIDATE,
    SKOPS_CANDIDATE,
    Candidate,
    Staged,
    State,
    parent_version,
)

if TYPE_CHECKING:
    import pandas as pd

    from sluice.models.contract import ServedModel
    from sluice.models.imports import ImportedModel
    from sluice.models.project import Project
    from sluice.pipelines.retraining import RetrainRequest
    from sluice.registry.bundle import ModelBundle
    from sluice.registry.store import ModelRegistry

_CHECK_ROWS = 1000


class ProjectTrainer:
    """Retrain with the deployed project's ``preprocess`` and ``train``.

    Parameters
    ----------
    project
        The image's project (:func:`sluice.models.project.deployed_project`), declaring ``train``.
    """

    def __init__(self, project: Project) -> None:
        self.project = project

    @property
    def target(self) -> str:
        """The label column, ``[tool.sluice] target``."""
        if not self.project.target:
            raise SluiceError(
                f"project {self.project.package!r}: [tool.sluice] target is not set; retraining needs the label column"
            )
        return self.project.target

    def parent(self, registry: ModelRegistry, request: RetrainRequest) -> int | None:
        if request.spec is not None:
            raise SluiceError(
                "retraining input field 'spec' is not accepted: this image retrains with project "
                f"{self.project.package!r}'s train ([tool.sluice]), and entry points come only from the image"
            )
        return parent_version(registry, request.model)

    def split(
        self, registry: ModelRegistry, state: State, frame: pd.DataFrame
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        from sluice.models.training import TrainingSpec, split

        data = self.project.run_preprocess(frame)
        if self.target not in data.columns:
            raise SluiceError(
                f"training data lacks the project's target column {self.target!r} ([tool.sluice] target)"
            )
        task = _parent_task(registry, state["model"], state["parent_version"])
        # The built-in's split: its holdout fraction and seed, stratified for a classifier.
        return split(data, TrainingSpec(target=self.target, numeric=(), task=task))

    def fit(
        self, registry: ModelRegistry, state: State, train_part: pd.DataFrame, holdout: pd.DataFrame
    ) -> Staged:
        from sluice.models.imports import holdout_metrics, reference_features

        hyperparameters = dict(registry.get(state["model"], version=state["parent_version"]).hyperparameters)
        model = self.project.run_train(train_part, hyperparameters)
        features = reference_features(holdout, self.target)
        try:
            model.predict(features.head(_CHECK_ROWS))
        except Exception as err:  # the user's model on the user's data: one line
            raise SluiceError(
                f"[tool.sluice] train returned a {type(model).__name__} that cannot predict the holdout rows "
                f"({type(err).__name__}: {str(err)[:300]})"
            ) from err
        imported = self._serialised(model, features.head(_CHECK_ROWS))
        recorded = {
            "candidate_metrics": holdout_metrics(model, holdout, self.target, task=imported.task),
            "hyperparameters": hyperparameters,
            "candidate_trusted": list(imported.skops_trusted),
            "candidate_source": imported.source,
        }
        name = SKOPS_CANDIDATE if imported.model_file.endswith(".skops") else JOBLIB_CANDIDATE
        return Staged(name, imported.body, recorded)

    def load(self, registry: ModelRegistry, state: State, body: bytes) -> Candidate:
        from sluice.models.contract import JOBLIB_FILE, SKOPS_FILE
        from sluice.models.imports import ImportedModel

        trusted = tuple(state.get("candidate_trusted") or ())
        if state["candidate_file"] == SKOPS_CANDIDATE:
            import skops.io as sio

            # The train step checked these types against the project's trust before staging.
            model_file, estimator = SKOPS_FILE, sio.loads(body, trusted=list(trusted))
        else:
            import joblib

            model_file, estimator = JOBLIB_FILE, joblib.load(io.BytesIO(body))  # verified bytes only
        imported = ImportedModel(
            estimator, model_file, body, trusted, dict(state.get("candidate_source") or {})
        )
        return Candidate(imported.task, state["candidate_metrics"], imported)

    def parent_metrics(
        self, registry: ModelRegistry, state: State, candidate: Candidate, holdout: pd.DataFrame
    ) -> dict[str, float]:
        from sluice.models.contract import served_model
        from sluice.models.imports import holdout_metrics

        loaded = registry.load(state["model"], version=state["parent_version"])
        where = f"champion {state['model']} v{state['parent_version']}"
        champion = ServedEstimator(
            served_model(loaded, "sklearn"), getattr(loaded.estimator, "classes_", None), where
        )
        return holdout_metrics(champion, holdout, self.target, task=candidate.task)

    def bundle(
        self,
        registry: ModelRegistry,
        state: State,
        candidate: Candidate,
        train_part: pd.DataFrame,
        holdout: pd.DataFrame,
    ) -> tuple[ModelBundle, dict[str, Any]]:
        from sluice.models.imports import bundle_fitted
        from sluice.registry.bundle import DESCRIPTOR_ARTIFACT
        from sluice.registry.lineage import code_version

        # Schema and drift baseline from the training partition, as the built-in recipe's.
        # Metrics and calibration on the holdout: the numbers the comparison shows.
        bundle = bundle_fitted(candidate.model, train_part, target=self.target, holdout=holdout)
        bundle.notes["project"] = {
            "package": self.project.package,
            "train": self.project.entry_points["train"],
        }
        return bundle, {
            "libraries": json.loads(bundle.artifacts[DESCRIPTOR_ARTIFACT])["libraries"],
            "code_version": f"{code_version()}; {self._package_version()}",
            "image_digest": os.environ.get("SLUICE_IMAGE_DIGEST", ""),
        }

    def _serialised(self, model: Any, sample: pd.DataFrame) -> ImportedModel:
        """``model`` in skops if skops holds it with trusted types and the same predictions, else joblib."""
        import joblib

        from sluice.models.contract import JOBLIB_FILE, SKOPS_FILE
        from sluice.models.imports import ImportedModel, _same_predictions, _Trust

        source: dict[str, Any] = {"format": "project", **self.project.entry_points}
        try:
            import skops.io as sio

            from sluice.models.contract import skops_bytes

            body, types = skops_bytes(model)
            refused = _Trust.of((), (self.project.package,)).refused(types)
            if refused:
                raise SluiceError(
                    f"type(s) outside scikit-learn, numpy, scipy and the project: {', '.join(refused)}"
                )
            if not _same_predictions(model, sio.loads(body, trusted=types), sample):
                raise SluiceError("the skops copy predicts differently")
            return ImportedModel(model, SKOPS_FILE, body, tuple(types), source)
        except Exception as err:  # skops cannot hold it (or not with trusted types): joblib, hash-checked
            source["kept_joblib"] = f"{type(err).__name__}: {str(err)[:300]}"
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        return ImportedModel(model, JOBLIB_FILE, buffer.getvalue(), (), source)

    def _package_version(self) -> str:
        version = getattr(import_module(self.project.package), "__version__", "")
        return f"{self.project.package} {version}".strip()


class ServedEstimator:
    """A registered version as an estimator on DataFrames, through the served-model contract.

    Rows are validated against the version's schema, as serving does; a row it refuses is an error
    (the comparison needs both models on the same rows).
    """

    def __init__(self, model: ServedModel, classes: Any, where: str) -> None:
        self.model = model
        self.where = where
        if classes is not None:
            self.classes_ = np.asarray(classes)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self._predict(frame)[0]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        probabilities = self._predict(frame)[1]
        if probabilities is None:
            raise SluiceError(f"{self.where} gives no probabilities")
        return probabilities

    def _predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        columns, errors = self.model.schema.validate(frame, as_frame=False)
        if errors:
            raise SluiceError(f"{self.where} refuses holdout rows: {errors[0]}")
        return self.model.predict(columns)


def _parent_task(registry: ModelRegistry, model: str, version: int) -> str:
    """``classification`` or ``regression``: the parent's ``model.json``, or its built-in ``spec.json``."""
    from sluice.models.contract import Descriptor
    from sluice.registry.bundle import DESCRIPTOR_ARTIFACT, SPEC_ARTIFACT

    record = registry.get(model, version=version)
    if DESCRIPTOR_ARTIFACT in record.artifacts:
        return Descriptor.from_json(registry.fetch(model, version, DESCRIPTOR_ARTIFACT)).task
    return str(json.loads(registry.fetch(model, version, SPEC_ARTIFACT)).get("task", "classification"))
