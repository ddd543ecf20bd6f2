"""A generated tabular dataset for the demo and tests, with controllable drift.

Credit-risk-like: numeric applicant features, two categoricals and a binary ``default`` label from a
known logistic relationship, so that drift and concept drift can be injected deliberately.

:data:`CREDIT` is what the ``sluice.datasets`` entry point ``credit`` names: ``sluice models
register --dataset credit`` finds the generator and its spec through it, so the runtime never
imports this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from sluice.models.training import TrainingSpec

NUMERIC = (
    "income",
    "debt_ratio",
    "age",
    "credit_lines",
    "utilisation",
    "late_payments",
    "tenure",
    "loan_amount",
)
CATEGORICAL = ("region", "product")
TARGET = "default"
_REGIONS = ("north", "south", "east", "west")
_PRODUCTS = ("card", "loan", "mortgage")


#: The columns the example project's applications do not have (examples/credit_decisions): its
#: model, schema and drift alarms are its own, not the demo model's.
NOT_IN_APPLICATIONS = ("tenure", "late_payments")


def credit_applications(n_rows: int, *, seed: int = 0, **options: Any) -> pd.DataFrame:
    """The example project's data: :func:`credit` rows without :data:`NOT_IN_APPLICATIONS`."""
    return credit(n_rows, seed=seed, **options).drop(columns=list(NOT_IN_APPLICATIONS))


def credit_spec(**hyperparameters: Any) -> TrainingSpec:
    """The training spec of :func:`credit` data: its target, numeric and categorical columns."""
    from sluice.models.training import TrainingSpec

    return TrainingSpec(
        target=TARGET, numeric=NUMERIC, categorical=CATEGORICAL, hyperparameters=hyperparameters
    )


def credit(
    n_rows: int,
    *,
    seed: int = 0,
    shift: dict[str, float] | None = None,
    concept_drift: float = 0.0,
    effect_change: dict[str, float] | None = None,
    missing_rate: float = 0.01,
) -> pd.DataFrame:
    """Generate ``n_rows`` applicants.

    Parameters
    ----------
    shift
        Mean shift per numeric feature, in units of that feature's standard deviation (data drift).
    concept_drift
        How much the label relationship changes (0 = none, 1 = the sign of the main effects flips).
    effect_change
        Factor per numeric feature on its effect on the label (concept drift in some features
        only: ``{"utilisation": -1.0}`` reverses that feature's effect).
    missing_rate
        Share of numeric cells set to NaN (imputation is part of the model).
    """
    rng = np.random.default_rng(seed)
    shift = shift or {}
    latent = rng.standard_normal((n_rows, len(NUMERIC)))
    scales = np.array([20_000, 0.15, 12, 4, 0.2, 1.2, 5, 8_000])
    centres = np.array([55_000, 0.35, 42, 8, 0.45, 1.0, 9, 20_000])
    for i, name in enumerate(NUMERIC):
        latent[:, i] += shift.get(name, 0.0)
    values = centres + latent * scales
    frame = pd.DataFrame(values, columns=list(NUMERIC))
    frame["credit_lines"] = frame["credit_lines"].round().clip(lower=0)
    frame["late_payments"] = frame["late_payments"].round().clip(lower=0)
    frame["age"] = frame["age"].clip(18, 95)
    frame["region"] = rng.choice(_REGIONS, size=n_rows, p=[0.4, 0.3, 0.2, 0.1])
    frame["product"] = rng.choice(_PRODUCTS, size=n_rows, p=[0.5, 0.35, 0.15])
    effect = np.array([-1.1, 1.3, -0.3, 0.2, 0.9, 1.0, -0.4, 0.5]) * (1.0 - 2.0 * concept_drift)
    effect = effect * np.array([(effect_change or {}).get(name, 1.0) for name in NUMERIC])
    logit = latent @ effect - 1.2 + np.where(frame["product"] == "card", 0.4, 0.0)
    frame[TARGET] = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    if missing_rate > 0:
        mask = rng.random((n_rows, len(NUMERIC))) < missing_rate
        numeric = frame[list(NUMERIC)].to_numpy()
        numeric[mask] = np.nan
        frame[list(NUMERIC)] = numeric
    return frame


class FrameGenerator(Protocol):
    def __call__(self, n_rows: int, *, seed: int = 0) -> pd.DataFrame: ...


@dataclass(frozen=True)
class GeneratedDataset:
    """A generator of labelled frames and the spec of its columns (a ``sluice.datasets`` entry)."""

    generate: FrameGenerator
    target: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]


CREDIT = GeneratedDataset(generate=credit, target=TARGET, numeric=NUMERIC, categorical=CATEGORICAL)
