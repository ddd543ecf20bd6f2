"""A model project's declaration, ``[tool.sluice]``: parsing, errors naming the key, running its steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sluice.errors import SluiceError
from sluice.models.project import Project, deployed_project, refuse_unknown_fields

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "credit_decisions"


def _project(tmp_path: Path, body: str, *, package: str = "mypkg") -> Path:
    (tmp_path / "src" / package).mkdir(parents=True, exist_ok=True)
    path = tmp_path / "pyproject.toml"
    path.write_text(f'[project]\nname = "x"\n\n[tool.sluice]\npackage = "{package}"\n{body}')
    return path


def test_the_example_project_declares_its_steps_and_target():
    project = Project.from_pyproject(EXAMPLE / "pyproject.toml")
    assert project.package == "credit_decisions" and project.target == "default"
    assert project.entry_points == {
        "preprocess": "credit_decisions.steps:preprocess",
        "train": "credit_decisions.steps:train",
        "postprocess": "credit_decisions.steps:postprocess",
        "model": "credit_decisions.scorecard:Scorecard",
    }
    assert project.has("train") and project.has("model")
    assert project.requirements == "requirements.txt"
    assert project.source_root == EXAMPLE / "src"


def test_a_flat_layout_imports_from_the_project_root(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.sluice]\npackage = "flat"\n')
    (tmp_path / "flat").mkdir()
    assert Project.from_pyproject(path).source_root == tmp_path


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('train = "os:system"', "train"),
        ('preprocess = "mypkgevil.steps:preprocess"', "preprocess"),
        ('postprocess = "mypkg.steps"', "postprocess"),
        ('train = "mypkg.steps:a.b"', "train"),
        ('train = "mypkg.steps:train:x"', "train"),
        ("train = 3", "train"),
        ('target = ["a"]', "target"),
        ("requirements = 1", "requirements"),
        ('serve = "mypkg:serve"', "serve"),
    ],
)
def test_a_bad_key_is_refused_naming_it(tmp_path, body, named):
    with pytest.raises(SluiceError, match=rf"\[tool.sluice\].*{named}") as caught:
        Project.from_pyproject(_project(tmp_path, body))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("package", ["", "1pkg", "a-b", "a..b"])
def test_the_package_must_be_an_importable_name(tmp_path, package):
    path = tmp_path / "pyproject.toml"
    path.write_text(f'[tool.sluice]\npackage = "{package}"\n')
    with pytest.raises(SluiceError, match="package must be an importable package name"):
        Project.from_pyproject(path)


def test_a_missing_file_bad_toml_or_no_table_say_so(tmp_path):
    with pytest.raises(SluiceError, match="cannot read the project file"):
        Project.from_pyproject(tmp_path / "absent.toml")
    (tmp_path / "bad.toml").write_text("[tool.sluice\n")
    with pytest.raises(SluiceError, match="not valid TOML"):
        Project.from_pyproject(tmp_path / "bad.toml")
    (tmp_path / "none.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(SluiceError, match=r"no \[tool.sluice\] table"):
        Project.from_pyproject(tmp_path / "none.toml")


def test_an_undeclared_entry_point_is_never_imported(tmp_path):
    project = Project.from_pyproject(_project(tmp_path, ""))
    with pytest.raises(SluiceError, match="declares no 'train'"):
        project.entry_point("train")


def test_a_declared_entry_point_that_does_not_exist_names_it(tmp_path, monkeypatch):
    path = _project(tmp_path, 'train = "mypkg.steps:train"', package="mypkg")
    (tmp_path / "src" / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "src" / "mypkg" / "steps.py").write_text("TRAIN = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    with pytest.raises(SluiceError, match="has no callable 'train'"):
        Project.from_pyproject(path).entry_point("train")
    missing = Project.from_pyproject(_project(tmp_path, 'train = "mypkg.nowhere:train"'))
    with pytest.raises(SluiceError, match=r"cannot import 'mypkg\.nowhere'"):
        missing.entry_point("train")


def test_deployed_project_reads_sluice_project(monkeypatch):
    monkeypatch.delenv("SLUICE_PROJECT", raising=False)
    assert deployed_project() is None
    monkeypatch.setenv("SLUICE_PROJECT", str(EXAMPLE / "pyproject.toml"))
    assert deployed_project().package == "credit_decisions"


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    return Project.from_pyproject(EXAMPLE / "pyproject.toml")


def test_run_preprocess_and_postprocess_check_what_the_user_code_returns(example, monkeypatch):
    frame = pd.DataFrame({"income": [1.0, -1.0], "region": ["N", "s"], "product": ["card", "loan"]})
    assert len(example.run_preprocess(frame)) == 1
    out = example.run_postprocess(frame, np.array([0.9, 0.1]))
    assert out["decision"].tolist() == ["decline", "approve"]
    from credit_decisions import steps

    monkeypatch.setattr(steps, "postprocess", lambda frame, scores: frame.head(1))
    with pytest.raises(SluiceError, match="postprocess returned 1 rows for 2"):
        example.run_postprocess(frame, np.array([0.9, 0.1]))
    monkeypatch.setattr(steps, "preprocess", lambda frame: frame.to_numpy())
    with pytest.raises(SluiceError, match="preprocess returned a ndarray, not a pandas DataFrame"):
        example.run_preprocess(frame)


def test_an_error_in_user_code_is_one_line_naming_the_step(example, monkeypatch):
    from credit_decisions import steps

    def broken(frame):
        raise KeyError("income")

    monkeypatch.setattr(steps, "preprocess", broken)
    with pytest.raises(
        SluiceError, match=r"preprocess \(credit_decisions.steps:preprocess\) failed: KeyError"
    ):
        example.run_preprocess(pd.DataFrame({"a": [1]}))


def test_refuse_unknown_fields_names_code_fields_first():
    refuse_unknown_fields({"model": "m"}, ("model",), what="input")
    with pytest.raises(SluiceError, match="input field 'train' is not accepted: entry points come only from"):
        refuse_unknown_fields({"model": "m", "zzz": 1, "train": "os:system"}, ("model",), what="input")
    with pytest.raises(SluiceError, match="input field 'colour' is not accepted: known fields: model"):
        refuse_unknown_fields({"model": "m", "colour": "red"}, ("model",), what="input")
