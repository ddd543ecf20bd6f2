"""Who makes a retraining run's candidate: a :class:`Trainer`, chosen once from the deployed image.

* :class:`BuiltinTrainer`: the built-in recipe, the parent's registered ``spec.json`` (estimator
  class, features, task) with its recorded ``get_params()``; a first version from the request's
  ``spec``. No new feature engineering or tuning.
* :class:`sluice.pipelines.project_training.ProjectTrainer`: the model project's own
  ``preprocess`` and ``train`` (``[tool.sluice]``, :mod:`sluice.models.project`), when the image's
  project declares ``train``. Nothing at run time can choose it or name other code.

The steps of :mod:`sluice.pipelines.retraining` call the trainer
:func:`sluice.pipelines.retraining.deployed_trainer` returns and hold no branch on either.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from sluice.errors import Conflict, NotFound, SluiceError
from sluice.names import CANDIDATE_FILES

if TYPE_CHECKING:
    import pandas as pd

    from sluice.models.training import TrainingSpec
    from sluice.pipelines.retraining import RetrainRequest
    from sluice.registry.bundle import ModelBundle
    from sluice.registry.store import ModelRegistry

State = dict[str, Any]
CHAMPION_ALIAS = "champion"
#: The staged candidate's file in the run's work prefix: joblib (the built-in's, or a project model
#: skops cannot hold) or skops.
JOBLIB_CANDIDATE, SKOPS_CANDIDATE = CANDIDATE_FILES


def parent_version(registry: ModelRegistry, model: str) -> int:
    """The version a retrain starts from: the champion, else the newest Approved version."""
    try:
        return registry.get(model, alias=CHAMPION_ALIAS).version
    except NotFound:
        approved = [r.version for r in registry.list_versions(model) if r.status == "Approved"]
        if not approved:
            raise Conflict(
                f"model {model!r} has no champion alias and no Approved version to retrain"
            ) from None
        return max(approved)


@dataclass
class Candidate:
    """A staged candidate, loaded from its verified bytes.

    Attributes
    ----------
    task
        ``"classification"`` or ``"regression"``: the comparison's primary metric follows it.
    metrics
        Its holdout metrics, as the train step recorded them.
    model
        The trainer's own form of it (what its :meth:`Trainer.bundle` registers).
    """

    task: str
    metrics: dict[str, float]
    model: Any


@dataclass(frozen=True)
class Staged:
    """What a train step stages: the candidate's file name and bytes, and what the state records."""

    file: str
    body: bytes
    recorded: dict[str, Any]


class Trainer(Protocol):
    """How a run makes and judges its candidate: the built-in recipe, or the deployed project's code.

    Every method takes the run's JSON ``state``; frames are the run's staged partitions.
    """

    def parent(self, registry: ModelRegistry, request: RetrainRequest) -> int | None:
        """The version the run retrains; ``None`` for a model's first version."""
        ...

    def split(
        self, registry: ModelRegistry, state: State, frame: pd.DataFrame
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The run's data as read → its train and holdout partitions."""
        ...

    def fit(
        self, registry: ModelRegistry, state: State, train_part: pd.DataFrame, holdout: pd.DataFrame
    ) -> Staged:
        """Train the candidate; record at least ``candidate_metrics`` (on ``holdout``) and ``hyperparameters``."""
        ...

    def load(self, registry: ModelRegistry, state: State, body: bytes) -> Candidate:
        """The candidate from its staged bytes, already checked against the recorded sha256."""
        ...

    def parent_metrics(
        self, registry: ModelRegistry, state: State, candidate: Candidate, holdout: pd.DataFrame
    ) -> dict[str, float]:
        """The parent version's metrics on the same holdout rows."""
        ...

    def bundle(
        self,
        registry: ModelRegistry,
        state: State,
        candidate: Candidate,
        train_part: pd.DataFrame,
        holdout: pd.DataFrame,
    ) -> tuple[ModelBundle, dict[str, Any]]:
        """The candidate's artifacts, and lineage fields beyond the data, parent and hyperparameters."""
        ...


class BuiltinTrainer:
    """The built-in recipe: the parent's ``spec.json`` form with its recorded ``get_params()``.

    A first version trains from the request's ``spec`` (:class:`~sluice.models.training.TrainingSpec`).
    """

    def parent(self, registry: ModelRegistry, request: RetrainRequest) -> int | None:
        if request.spec is None:
            return parent_version(registry, request.model)
        from sluice.models.training import TrainingSpec

        TrainingSpec.from_dict(request.spec)  # checked before any data is read
        return None

    def split(
        self, registry: ModelRegistry, state: State, frame: pd.DataFrame
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        from sluice.models.training import split

        return split(frame, _parent_spec(registry, state))

    def fit(
        self, registry: ModelRegistry, state: State, train_part: pd.DataFrame, holdout: pd.DataFrame
    ) -> Staged:
        import joblib

        from sluice.models import training

        result = training.fit(train_part, holdout, _parent_spec(registry, state))
        buffer = io.BytesIO()
        joblib.dump(
            {"estimator": result.estimator, "preprocessor": result.preprocessor.to_artifacts()}, buffer
        )
        recorded = {"candidate_metrics": result.metrics, "hyperparameters": result.hyperparameters}
        return Staged(JOBLIB_CANDIDATE, buffer.getvalue(), recorded)

    def load(self, registry: ModelRegistry, state: State, body: bytes) -> Candidate:
        import joblib

        from sluice.models.features import Preprocessor
        from sluice.models.training import TrainingResult

        staged = joblib.load(io.BytesIO(body))  # verified bytes only
        spec = _parent_spec(registry, state)
        metrics = state["candidate_metrics"]
        preprocessor = Preprocessor.from_artifacts(staged["preprocessor"])
        return Candidate(
            spec.task, metrics, TrainingResult(spec, preprocessor, staged["estimator"], metrics, None, None)
        )

    def parent_metrics(
        self, registry: ModelRegistry, state: State, candidate: Candidate, holdout: pd.DataFrame
    ) -> dict[str, float]:
        from sluice.models.training import TrainingResult, evaluate

        champion = registry.load(state["model"], version=state["parent_version"])
        if champion.preprocessor is None:
            raise SluiceError(
                f"model {state['model']!r} version {state['parent_version']} is not a built-in recipe "
                "version: retrain it with its project's image ([tool.sluice] train)"
            )
        as_result = TrainingResult(
            candidate.model.spec, champion.preprocessor, champion.estimator, {}, None, None
        )
        return evaluate(as_result, holdout)

    def bundle(
        self,
        registry: ModelRegistry,
        state: State,
        candidate: Candidate,
        train_part: pd.DataFrame,
        holdout: pd.DataFrame,
    ) -> tuple[ModelBundle, dict[str, Any]]:
        from sluice.models.packaging import bundle_from_training

        # The train step already scored this candidate on this holdout.
        return bundle_from_training(replace(candidate.model, train=train_part, holdout=holdout)), {}


# -- internals --------------------------------------------------------------------------------


def _parent_spec(registry: ModelRegistry, state: State) -> TrainingSpec:
    """The run's form: the request's ``spec`` (a first version), else the parent's with its params."""
    from sluice.models.training import TrainingSpec

    if state.get("spec") is not None:
        return TrainingSpec.from_dict(state["spec"])
    spec = TrainingSpec.from_dict(
        json.loads(registry.fetch(state["model"], state["parent_version"], "spec.json"))
    )
    params = (
        registry.get(state["model"], version=state["parent_version"]).hyperparameters or spec.hyperparameters
    )
    return replace(spec, hyperparameters=dict(params))
