"""A points-based scorecard: the kind of model a credit team writes, reviews and signs off by hand.

Each feature is cut into bins (numeric features at training quantiles, plus a bin for missing
values; categoricals by category, plus one for anything unseen or missing), and every bin is
worth a number of points. An applicant's score is the base points plus the points of their bins;
a higher score means a lower risk. The score maps to a probability of default through the
scaling: ``base_score`` points at odds of ``base_odds`` to one against default, and every
``pdo`` points more doubles those odds.

Sluice serves it as a python-flavour model (``model`` in ``[tool.sluice]``): registration gives
:meth:`Scorecard.load` the files of the model's directory (here ``scorecard.json``), serving calls
:meth:`Scorecard.predict_proba` with a DataFrame of the request's features.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FILE = "scorecard.json"
CLASSES = (0, 1)


@dataclass
class Scorecard:
    """Points per bin of each feature, and the scaling from points to a probability of default.

    Attributes
    ----------
    base_points
        Points every applicant starts with.
    numeric
        ``{feature: {"edges": [...], "points": [...], "missing": p}}``: ``len(edges) + 1`` bins.
    categorical
        ``{feature: {"points": {category: p}, "other": p}}``: ``other`` for unseen or missing.
    base_score, base_odds, pdo
        The scaling: ``base_score`` points at odds ``base_odds``:1 against default; ``pdo``
        points to double the odds.
    threshold
        Probability of default at or above which :meth:`predict` says ``1``.
    """

    base_points: float
    numeric: dict[str, dict[str, Any]] = field(default_factory=dict)
    categorical: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_score: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0
    threshold: float = 0.5

    classes_ = np.asarray(CLASSES)

    @classmethod
    def load(cls, artifacts: Mapping[str, bytes]) -> Scorecard:
        """The scorecard in ``artifacts[FILE]`` (the model directory's files, by relative path)."""
        if FILE not in artifacts:
            raise FileNotFoundError(f"the model directory has no {FILE}")
        return cls(**json.loads(artifacts[FILE]))

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=1, sort_keys=True).encode()

    def save(self, directory: str | Path) -> Path:
        """Write ``scorecard.json`` into ``directory`` (created if needed): what Sluice registers."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / FILE).write_bytes(self.to_json())
        return folder

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2.0)

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Each row's total points."""
        total = np.full(len(frame), float(self.base_points))
        for name, rule in self.numeric.items():
            values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            points = np.asarray(rule["points"], dtype=float)[np.searchsorted(rule["edges"], values, "right")]
            total += np.where(np.isnan(values), float(rule["missing"]), points)
        for name, rule in self.categorical.items():
            table, other = rule["points"], float(rule["other"])
            total += np.array([table.get(_category(v), other) for v in frame[name].tolist()], dtype=float)
        return total

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """``[P(no default), P(default)]`` per row."""
        offset = self.base_score - self.factor * math.log(self.base_odds)
        logit = (offset - self.score(frame)) / self.factor
        default = 1.0 / (1.0 + np.exp(-logit))
        return np.column_stack([1.0 - default, default])

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(frame)[:, 1] >= self.threshold).astype(int)


def fit_scorecard(
    frame: pd.DataFrame, target: str, *, bins: int = 5, regularisation: float = 1.0
) -> Scorecard:
    """Derive a scorecard's points from labelled rows, by logistic regression on bin indicators.

    Parameters
    ----------
    frame
        Features and the 0/1 ``target`` column; numeric columns are binned at quantiles, any
        other column is categorical.
    bins
        Quantile bins per numeric feature (fewer where values repeat).
    regularisation
        Inverse L2 strength of the regression (scikit-learn's ``C``).
    """
    from sklearn.linear_model import LogisticRegression

    features = frame.drop(columns=[target])
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(features[c])]
    card = Scorecard(base_points=0.0)
    for name in numeric:
        values = features[name].dropna().to_numpy(dtype=float)
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])).tolist()
        card.numeric[name] = {"edges": edges, "points": [0.0] * (len(edges) + 1), "missing": 0.0}
    for name in (c for c in features if c not in numeric):
        seen = sorted({c for c in map(_category, features[name].tolist()) if c is not None})
        card.categorical[name] = {"points": dict.fromkeys(seen, 0.0), "other": 0.0}
    slots = _slots(card)
    model = LogisticRegression(C=regularisation, max_iter=2000)
    model.fit(_indicators(card, features, slots), frame[target].to_numpy(dtype=int))
    # a higher score is a lower risk: points are the negated log-odds, scaled and rounded
    points = (np.round(-model.coef_[0] * card.factor) + 0.0).tolist()  # + 0.0: no -0.0
    for (name, where), value in zip(slots, points, strict=True):
        rule = card.numeric.get(name) or card.categorical[name]
        if where in ("missing", "other"):
            rule[where] = value
        else:
            rule["points"][where] = value
    offset = card.base_score - card.factor * math.log(card.base_odds)
    card.base_points = float(np.round(offset - card.factor * model.intercept_[0]))
    return card


def _slots(card: Scorecard) -> list[tuple[str, int | str]]:
    """One indicator column per bin: ``(feature, bin index | "missing" | category | "other")``."""
    out: list[tuple[str, int | str]] = []
    for name, rule in card.numeric.items():
        out += [(name, i) for i in range(len(rule["points"]))] + [(name, "missing")]
    for name, rule in card.categorical.items():
        out += [(name, category) for category in rule["points"]] + [(name, "other")]
    return out


def _indicators(card: Scorecard, features: pd.DataFrame, slots: list[tuple[str, int | str]]) -> np.ndarray:
    """The 0/1 bin-membership matrix: the scorecard with one point per slot, one slot at a time."""
    columns = []
    for name, where in slots:
        if name in card.numeric:
            values = pd.to_numeric(features[name], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            if where == "missing":
                columns.append(np.isnan(values))
            else:
                index = np.searchsorted(card.numeric[name]["edges"], values, "right")
                columns.append(~np.isnan(values) & (index == where))
        else:
            found = [_category(v) for v in features[name].tolist()]
            known = card.categorical[name]["points"]
            columns.append(np.array([(v not in known) if where == "other" else v == where for v in found]))
    return np.column_stack(columns).astype(float)


def _category(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return str(value)
