"""Stage settings from CDK context: defaults, overrides and one-line errors naming the key."""

from __future__ import annotations

import json
import re

import pytest

from infra.config import DEFAULT_RESERVED_CONCURRENCY, AppConfig, ConfigError, ModelConfig

BASE = {
    "dev:account": "111111111111",
    "dev:region": "eu-west-1",
    "prod:account": "222222222222",
    "prod:region": "eu-central-1",
}


def config(**overrides) -> AppConfig:
    context = {**BASE, **overrides}
    return AppConfig.from_context(context.get)


def test_both_stages_by_default_with_prod_retaining_data():
    stages = {s.name: s for s in config().stages}
    assert set(stages) == {"dev", "prod"}
    assert stages["prod"].retain_data is True
    assert stages["dev"].retain_data is False
    assert stages["prod"].region == "eu-central-1"


def test_prod_pulls_from_dev_and_dev_lets_only_prods_promotion_role_read():
    prod, dev = config().stage("prod"), config().stage("dev")
    assert prod.promotion_source is not None
    assert (prod.promotion_source.stage, prod.promotion_source.account) == ("dev", "111111111111")
    assert prod.registry_readers == ()
    assert dev.promotion_source is None
    assert dev.registry_readers == ("arn:aws:iam::222222222222:role/sluice-prod-promotion",)
    assert (dev.audit_retention_days, prod.audit_retention_days) == (30, 3650)


def test_stage_selection():
    assert [s.name for s in config(stage="prod").stages] == ["prod"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("prod:account", "abc", "context key 'prod:account' must be a 12-digit AWS account id; got 'abc'"),
        ("dev:region", "mars-1", "context key 'dev:region' must be an AWS region"),
        ("stage", "qa", "context key 'stage' must be one of dev, prod, all"),
        ("dev:retainData", "maybe", "context key 'dev:retainData' must be true or false"),
        ("sluice:alarmEmail", "nobody", "context key 'sluice:alarmEmail' must be an e-mail address"),
    ],
)
def test_malformed_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError) as err:
        config(**{key: value})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_account_names_the_key():
    context = {k: v for k, v in BASE.items() if k != "dev:account"}
    with pytest.raises(ConfigError, match="context key 'dev:account' is missing"):
        AppConfig.from_context(context.get)


def test_reserved_concurrency_defaults_cap_the_public_entry_points():
    # Given no reservedConcurrency setting
    dev = config().stage("dev")
    # Then every function has a reservation, the endpoint and labels intake capped
    assert dev.reserved_concurrency == DEFAULT_RESERVED_CONCURRENCY
    assert dev.reserved_concurrency["endpoint"] == 50
    assert dev.reserved_concurrency["labels"] == 5
    assert all(limit is not None for limit in dev.reserved_concurrency.values())


def test_reserved_concurrency_overrides_one_stage_and_null_unreserves():
    # Given prod raising the endpoint's limit and leaving the drift job unreserved
    stages = config(**{"prod:reservedConcurrency": {"endpoint": 200, "drift": None}})
    prod, dev = stages.stage("prod"), stages.stage("dev")
    # Then prod has both changes over the defaults, and dev keeps the defaults
    assert prod.reserved_concurrency["endpoint"] == 200
    assert prod.reserved_concurrency["drift"] is None
    assert prod.reserved_concurrency["labels"] == DEFAULT_RESERVED_CONCURRENCY["labels"]
    assert dev.reserved_concurrency == DEFAULT_RESERVED_CONCURRENCY


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (50, "context key 'dev:reservedConcurrency' must be an object of function: limit"),
        (
            {"scorer": 5},
            "context key 'dev:reservedConcurrency' names unknown function 'scorer' (known: endpoint",
        ),
        ({"endpoint": 0}, "'endpoint' must be an integer from 1 to 1000, or null for no reservation; got 0"),
        ({"labels": 1001}, "'labels' must be an integer from 1 to 1000"),
        ({"labels": "5"}, "'labels' must be an integer from 1 to 1000"),
        ({"labels": True}, "'labels' must be an integer from 1 to 1000"),
    ],
)
def test_malformed_reserved_concurrency_names_the_key_and_function(value, message):
    with pytest.raises(ConfigError) as err:
        config(**{"dev:reservedConcurrency": value})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_execution_data_is_logged_only_where_context_turns_it_on():
    # Given no setting, neither stage logs execution data
    assert not any(s.log_execution_data for s in config().stages)
    # When dev turns it on (as cdk.json does)
    stages = config(**{"dev:logExecutionData": True})
    # Then only dev logs it
    assert stages.stage("dev").log_execution_data is True
    assert stages.stage("prod").log_execution_data is False
    with pytest.raises(ConfigError, match="context key 'prod:logExecutionData' must be true or false"):
        config(**{"prod:logExecutionData": "sometimes"})


# --- models (sluice:models, sluice:model) ---------------------------------------------------------


def test_one_model_by_default_and_sluice_model_as_shorthand():
    # Given no model setting, every stage serves credit-risk, with the constructs' defaults
    assert [m.name for m in config().stage("dev").models] == ["credit-risk"]
    assert config().stage("dev").models[0] == ModelConfig("credit-risk")
    # And sluice:model names the one model (it is checked for a committed schema)
    stage = config(**{"sluice:model": "credit-decisions"}).stage("prod")
    assert [m.name for m in stage.models] == ["credit-decisions"]
    assert stage.model_name == "credit-decisions"


def test_models_list_with_settings_and_the_first_as_default():
    # Given two models, the second with its own endpoint, batch and alarm settings
    models = [
        {"name": "credit-risk"},
        {
            "name": "credit-decisions",
            "flavour": "container",
            "memoryMb": 2048,
            "batchSchedule": "none",
            "shareTolerance": 0.25,
            "featurePsiTolerance": {"income": 0.3},
            "qualityBounds": [0.05, 0.95],
        },
    ]
    stage = config(**{"sluice:models": models, "sluice:model": "ignored-when-models-is-set"}).stage("dev")
    # Then both are served, the first is the stage's default, and the settings are typed
    first, second = stage.models
    assert (stage.model_name, first, second.name) == (
        "credit-risk",
        ModelConfig("credit-risk"),
        "credit-decisions",
    )
    assert (second.flavour, second.memory_mb, second.batch_schedule_days) == ("container", 2048, None)
    assert (second.share_tolerance, second.feature_psi_tolerance) == (0.25, (("income", 0.3),))
    assert second.quality_bounds == (0.05, 0.95)


def test_models_from_the_command_line_and_from_a_models_file(tmp_path):
    listed = [{"name": "credit-decisions"}, {"name": "credit-risk", "batchSchedule": 7}]
    # -c sluice:models='[...]' arrives as a string
    from_cli = config(**{"sluice:models": json.dumps(listed)}).stage("dev")
    # A models file: a path (relative to cdk.json, or absolute) of a JSON file with the list
    path = tmp_path / "models.json"
    path.write_text(json.dumps(listed))
    from_file = config(**{"sluice:models": str(path)}).stage("dev")
    assert from_cli.models == from_file.models
    assert [(m.name, m.batch_schedule_days) for m in from_file.models] == [
        ("credit-decisions", 1),
        ("credit-risk", 7),
    ]


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([], "context key 'sluice:models' must be a non-empty list of model objects"),
        ([{"memoryMb": 512}], "context key 'sluice:models'[0] must be an object with at least a 'name'"),
        ([{"name": "Credit_Risk"}], "context key 'sluice:models'[0].name must be 1-43 lower-case letters"),
        ([{"name": "m" * 44}], "context key 'sluice:models'[0].name must be 1-43 lower-case letters"),
        (
            [{"name": "credit-risk", "memory": 512}],
            "context key 'sluice:models'[0] (credit-risk): unknown field 'memory' (known: name, flavour, memoryMb",
        ),
        (
            [{"name": "credit-risk"}, {"name": "credit-risk"}],
            "context key 'sluice:models': model 'credit-risk' is listed twice",
        ),
        (
            [{"name": "credit-risk", "memoryMb": 64}],
            "(credit-risk): 'memoryMb' must be an integer from 128 to 10240; got 64",
        ),
        ([{"name": "credit-risk", "flavour": "gpu"}], "'flavour' must be 'zip' or 'container'; got 'gpu'"),
        (
            [{"name": "credit-risk", "batchSchedule": 0}],
            "'batchSchedule' must be a number of days from 1 to 365",
        ),
        ([{"name": "credit-risk", "shareTolerance": True}], "'shareTolerance' must be a number from 0 to 1"),
        ([{"name": "credit-risk", "qualityBounds": [0.9, 0.1]}], "'qualityBounds' must be [low, high]"),
        (
            [{"name": "credit-risk", "featurePsiTolerance": {"salary": 0.3}}],
            "'featurePsiTolerance' names 'salary', not a feature of infra/schemas/credit-risk.json (income,",
        ),
        (
            [{"name": "no-such-model"}],
            "context key 'sluice:models'[0] (no-such-model): infra/schemas/no-such-model.json not found: "
            "commit the model's feature schema there",
        ),
        (
            "no/such/models.json",
            "models file no/such/models.json (context key 'sluice:models') does not exist",
        ),
    ],
)
def test_malformed_models_are_one_line_naming_the_key(models, message):
    with pytest.raises(ConfigError) as err:
        config(**{"sluice:models": models})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_sluice_model_without_a_schema_names_the_file():
    with pytest.raises(
        ConfigError, match=r"^context key 'sluice:model': infra/schemas/fraud\.json not found"
    ):
        config(**{"sluice:model": "fraud"})


# --- a model's project (issue 15: "Your models, your code") ---------------------------------------

PROJECT_MODEL = {"name": "credit-decisions", "project": "examples/credit_decisions", "flavour": "container"}


def test_a_model_names_its_project_folder():
    # Given the example project, relative to cdk.json, with the container flavour
    (model,) = config(**{"sluice:models": [PROJECT_MODEL]}).stage("dev").models
    # Then the model keeps the folder (the image's PROJECT build arg), normalized
    assert (model.project, model.flavour) == ("examples/credit_decisions", "container")
    assert ModelConfig("credit-risk").project is None
    spelled = {**PROJECT_MODEL, "project": "./examples/credit_decisions/"}
    assert (
        config(**{"sluice:models": [spelled]}).stage("dev").models[0].project == "examples/credit_decisions"
    )


@pytest.fixture
def app_dir(tmp_path, monkeypatch):
    """An app directory holding model projects written by the test (schemas stay the repo's)."""
    import infra.model_projects

    monkeypatch.setattr(infra.model_projects, "APP_DIR", tmp_path)
    return tmp_path


def write_project(
    root,
    *,
    sluice: str | None = 'package = "credit_decisions"\nrequirements = "requirements.txt"\n',
    requirements: str | None = "scikit-learn==1.9.1\n",
) -> None:
    root.mkdir(parents=True)
    if sluice is not None:
        (root / "pyproject.toml").write_text('[project]\nname = "p"\n\n[tool.sluice]\n' + sluice)
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)


@pytest.mark.parametrize(
    ("sluice", "requirements", "message"),
    [
        (None, None, "'project' proj/pyproject.toml not found: a model project declares its code there"),
        ("", "", "'project' proj/pyproject.toml: [tool.sluice] must name the project's 'package'"),
        ('package = "p"\nrequirements = "reqs.txt"\n', "", "'project' proj/reqs.txt not found"),
        (
            'package = "p"\nrequirements = "requirements.txt"\n',
            "pandas>=3\n",
            "'project' proj/requirements.txt: 'pandas>=3' is not pinned: pin every requirement with ==",
        ),
        (
            'package = "p"\nrequirements = "requirements.txt"\n',
            "lightgbm==4.6.0\nScikit_Learn==1.8.0  # older\n",
            "'project' proj/requirements.txt pins Scikit_Learn==1.8.0 but Sluice's model image pins "
            "Scikit_Learn==1.9.1 (containers/model/requirements.txt)",
        ),
    ],
)
def test_a_broken_project_is_one_line_naming_the_key(app_dir, sluice, requirements, message):
    # Given a project folder missing a piece, or pinning loosely, or pinning another base version
    write_project(app_dir / "proj", sluice=sluice, requirements=requirements)
    entry = {**PROJECT_MODEL, "project": "proj"}
    # Then synth stops with one line naming the key, the model, the field and the file
    with pytest.raises(ConfigError) as err:
        config(**{"sluice:models": [entry]})
    assert str(err.value).startswith("context key 'sluice:models'[0] (credit-decisions): ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_project_without_a_sluice_table_or_outside_the_app_is_refused(app_dir):
    (app_dir / "bare").mkdir()
    (app_dir / "bare" / "pyproject.toml").write_text('[project]\nname = "bare"\n')
    for project, message in [
        ("bare", "'project' bare/pyproject.toml has no [tool.sluice] table"),
        ("../elsewhere", "'project' ../elsewhere must be a folder inside"),
        (".", "'project' . must be a folder inside"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            config(**{"sluice:models": [{**PROJECT_MODEL, "project": project}]})


def test_a_project_needs_the_container_flavour():
    # The zip flavour serves ONNX with numpy only: a project's code cannot run there
    for entry in (
        {**PROJECT_MODEL, "flavour": "zip"},
        {k: v for k, v in PROJECT_MODEL.items() if k != "flavour"},
    ):
        with pytest.raises(ConfigError) as err:
            config(**{"sluice:models": [entry]})
        assert str(err.value) == (
            "context key 'sluice:models'[0] (credit-decisions): 'project' needs 'flavour': 'container' "
            "(the project's code runs in the model's image; the zip flavour serves ONNX without it)"
        )
    with pytest.raises(ConfigError, match="'project' must be the path of a model project folder"):
        config(**{"sluice:models": [{**PROJECT_MODEL, "project": 3}]})
