"""``sluice --stage``: finding a stage's names (local state, CloudFormation outputs), one-line errors,
and the model reference grammar."""

from __future__ import annotations

import json
import os

import boto3
import pytest
from moto import mock_aws

from sluice.cli import main
from sluice.cli import stage as discovery
from sluice.cli.refs import ModelRef, parse_ref, split_version
from sluice.errors import SluiceError
from sluice.names import STAGE_OUTPUTS, stage_stack_names
from sluice.settings import Settings

ACCOUNT, REGION = "111111111111", "eu-west-1"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A HOME of its own, so the registry of running stacks is empty and private."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def local_state(pid: int, *, port: int = 4566) -> dict:
    return {
        "stage": "Dev",
        "account": ACCOUNT,
        "region": REGION,
        "pid": pid,
        "endpoint_url": f"http://127.0.0.1:{port}",
        "credentials": {
            "aws_access_key_id": "AKIALOCAL",
            "aws_secret_access_key": "s3cret",
            "user_arn": "arn",
        },
        "stacks": [
            {
                "stack_name": "Dev-Stateful",
                "outputs": {"RegistryTable": "sluice-dev-registry"},
                "resources": [],
            },
            {
                "stack_name": "Dev-Service",
                "outputs": {
                    "EndpointUrl": "https://abc123.execute-api.eu-west-1.amazonaws.com/dev/",
                    "ModelName": "credit-risk",
                },
                "resources": [
                    {
                        "logical_id": "RetrainingStateMachine88099325",
                        "physical_id": "arn:aws:states:eu-west-1:111111111111:stateMachine:retrain",
                        "resource_type": "AWS::StepFunctions::StateMachine",
                    }
                ],
            },
        ],
        "apis": [
            {"api_id": "abc123", "logical_id": "EndpointRestApiFD84CB84", "url": "http://127.0.0.1:9001/dev"}
        ],
    }


def write_stack(tmp_path, state: dict, *, kind: str = "local"):
    state_file = tmp_path / f"state-{state['pid']}" / "state.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text(json.dumps(state))
    return discovery.register_stack(state_file, stage=state["stage"], kind=kind, pid=state["pid"])


def test_local_environment_maps_outputs_apis_and_credentials():
    env = discovery.local_environment(local_state(os.getpid()), stage="dev")
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("AKIALOCAL", "s3cret")
    assert env["AWS_DEFAULT_REGION"] == REGION
    assert env["SLUICE_REGISTRY_TABLE"] == "sluice-dev-registry"
    # Buckets follow the naming convention where the state has no output for them
    assert env["SLUICE_WORK_BUCKET"] == f"sluice-dev-work-{ACCOUNT}-{REGION}"
    # The API's URL is where the local gateway serves it, with the real stage path
    assert env["SLUICE_ENDPOINT_URL"] == "http://127.0.0.1:9001/dev"
    assert env["SLUICE_BATCH_ENDPOINT_URL"] == "http://127.0.0.1:9001/dev/predict"
    assert env["SLUICE_RETRAIN_STATE_MACHINE_ARN"].endswith(":stateMachine:retrain")
    assert env["SLUICE_STAGE"] == "dev" and env["SLUICE_STAGE_MODEL"] == "credit-risk"


def test_each_model_of_a_stage_gets_its_own_pipelines_and_endpoint():
    # Given a local stage serving two models, whose outputs list both (AWS URLs in a JSON output)
    state = local_state(os.getpid())
    models = {
        "credit-risk": {"url": "https://abc123.execute-api.eu-west-1.amazonaws.com/dev/", "function": "f1",
                        "batch": "arn:batch-1", "retrain": "arn:retrain-1"},
        "credit-decisions": {"url": "https://def456.execute-api.eu-west-1.amazonaws.com/dev/", "function": "f2",
                             "batch": "arn:batch-2", "retrain": "arn:retrain-2"},
    }
    state["stacks"][1]["outputs"]["Models"] = json.dumps(models)
    state["apis"].append({"api_id": "def456", "logical_id": "ModelcreditdecisionsEndpoint", "url": "http://127.0.0.1:9002/dev"})
    env = discovery.local_environment(state, stage="dev")
    # When a command resolves its settings for the second model
    settings = Settings.from_env(env)
    second = settings.for_model("credit-decisions")
    # Then it gets that model's state machines, endpoint function and local URL, not the default's
    assert (second.batch_state_machine_arn, second.retrain_state_machine_arn) == ("arn:batch-2", "arn:retrain-2")
    assert second.batch_endpoint_url == "http://127.0.0.1:9002/dev/predict"
    assert settings.endpoint_function("credit-decisions") == "f2"
    # and a model the stage does not list keeps the stage's settings
    assert settings.for_model("fraud") == settings and settings.endpoint_function("fraud") == ""
    with pytest.raises(SluiceError, match="SLUICE_STAGE_MODELS"):
        Settings(stage_models="not json").for_model("x")


def test_running_stacks_skip_dead_processes_and_foreign_state(home, tmp_path):
    # Given a live stack, one whose process is gone, and one whose state another pid has taken over
    write_stack(tmp_path, local_state(os.getpid()), kind="demo")
    dead = write_stack(tmp_path, local_state(2**22 + 12345))
    other = local_state(os.getppid())
    path = write_stack(tmp_path, other)
    state_file = json.loads(path.read_text())["state_file"]
    with open(state_file, "w") as f:
        json.dump({**other, "pid": 1}, f)
    # Then only the live one counts, and the dead entry is cleaned up
    [stack] = discovery.running_stacks("dev")
    assert (stack.pid, stack.kind, stack.stage) == (os.getpid(), "demo", "Dev")
    assert not dead.exists()
    assert discovery.choose_local("DEV") == stack
    assert discovery.choose_local("prod") is None


def test_stage_environment_never_overrides_what_the_caller_set(monkeypatch):
    monkeypatch.setenv("SLUICE_REGISTRY_TABLE", "mine")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "explicit")
    monkeypatch.delenv("SLUICE_WORK_BUCKET", raising=False)
    found = {"SLUICE_REGISTRY_TABLE": "found", "SLUICE_WORK_BUCKET": "w", "AWS_ACCESS_KEY_ID": "k"}
    found["AWS_SECRET_ACCESS_KEY"] = "s"
    with discovery.stage_environment(found) as added:
        assert os.environ["SLUICE_REGISTRY_TABLE"] == "mine"
        assert os.environ["SLUICE_WORK_BUCKET"] == "w"
        assert os.environ["AWS_ACCESS_KEY_ID"] == "explicit"  # credentials only as a pair
        assert set(added) == {"SLUICE_WORK_BUCKET"}
    assert "SLUICE_WORK_BUCKET" not in os.environ


def test_export_lines_quote_for_the_shell():
    assert discovery.export_lines({"B": "x y", "A": "1"}) == ["export A=1", "export B='x y'"]


@mock_aws
def test_aws_environment_reads_the_stage_stacks_outputs(monkeypatch):
    # Given the dev stage's two stacks with their outputs
    cfn = boto3.client("cloudformation", region_name=REGION)
    stateful, service = stage_stack_names("dev")
    assert (stateful, service) == ("Dev-Stateful", "Dev-Service")

    def template(outputs: dict) -> str:
        return json.dumps(
            {
                "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {k: {"Value": v} for k, v in outputs.items()},
            }
        )

    cfn.create_stack(StackName=stateful, TemplateBody=template({"RegistryTable": "sluice-dev-registry"}))
    cfn.create_stack(
        StackName=service,
        TemplateBody=template({"EndpointUrl": "https://x.execute-api.eu-west-1.amazonaws.com/dev/"}),
    )
    # Then the environment names them
    env = discovery.aws_environment("dev", region=REGION)
    assert env["SLUICE_REGISTRY_TABLE"] == "sluice-dev-registry"
    assert env["SLUICE_ENDPOINT_URL"] == "https://x.execute-api.eu-west-1.amazonaws.com/dev"
    assert env["AWS_DEFAULT_REGION"] == REGION
    assert set(STAGE_OUTPUTS) >= {"RegistryTable", "EndpointUrl"}


@mock_aws
def test_a_missing_stack_is_one_line_with_exit_2(home, capsys):
    code = main(["--stage", "dev", "models", "list"])
    err = capsys.readouterr().err
    assert code == 2
    assert (
        err.startswith("sluice: error: stage dev: stack Dev-Stateful does not exist") and err.count("\n") == 1
    )


def test_missing_credentials_are_one_line_with_exit_2(home, monkeypatch, capsys, tmp_path):
    # Given no credentials at all, and no local stack
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # boto3's default session keeps the credentials it resolved for earlier tests; a CLI process
    # starts without one.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    monkeypatch.setenv("SLUICE_REGISTRY_TABLE", "t")
    monkeypatch.setenv("SLUICE_REGISTRY_BUCKET", "b")
    # When a command needs AWS
    code = main(["models", "list"])
    # Then it is one line, not a traceback
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("sluice: error: no AWS credentials") and err.count("\n") == 1


def test_without_a_stage_a_missing_setting_names_the_way_to_find_it(home, monkeypatch, capsys):
    monkeypatch.delenv("SLUICE_STAGE", raising=False)
    monkeypatch.delenv("SLUICE_REGISTRY_TABLE", raising=False)
    assert main(["endpoint", "status", "credit-risk"]) == 2
    assert "--stage dev" in capsys.readouterr().err


def test_a_local_stack_is_found_by_stage(home, tmp_path, monkeypatch, capsys):
    # Given a running local dev stack (this process stands in for it)
    write_stack(tmp_path, local_state(os.getpid(), port=1))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "SLUICE_REGISTRY_TABLE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLUICE_STAGE", "dev")
    seen = {}

    def fake(args):
        seen.update(
            {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "SLUICE_REGISTRY_TABLE")}
        )
        return 0

    monkeypatch.setattr("sluice.cli.models.cmd_history", fake)
    # When a command runs with only SLUICE_STAGE set
    assert main(["models", "history", "credit-risk"]) == 0
    # Then it ran against the local stack, with its credentials, and left the environment as it was
    assert seen == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_ACCESS_KEY_ID": "AKIALOCAL",
        "SLUICE_REGISTRY_TABLE": "sluice-dev-registry",
    }
    assert "AWS_ENDPOINT_URL" not in os.environ


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("credit", ModelRef("credit")),
        ("credit:2", ModelRef("credit", version=2)),
        ("credit-risk@champion", ModelRef("credit-risk", alias="champion")),
    ],
)
def test_model_references(text, ref):
    assert parse_ref(text) == ref
    assert str(ref) == text


@pytest.mark.parametrize("text", ["credit:0", "credit:x", "credit@", "a:1:2", "a@b:1", ""])
def test_bad_model_references_name_the_grammar_or_the_version(text):
    with pytest.raises(SluiceError, match=r"^model reference"):
        parse_ref(text)


def test_older_forms_fill_what_the_reference_leaves_open():
    assert split_version(ModelRef("m"), ["2", "0.1"], keep=1) == (ModelRef("m", version=2), ["0.1"])
    assert split_version(ModelRef("m", version=2), ["0.1"], keep=1) == (ModelRef("m", version=2), ["0.1"])
    assert ModelRef("m").with_version(3) == ModelRef("m", version=3)
    with pytest.raises(SluiceError, match="already names a version"):
        ModelRef("m", version=2).with_version(3)
    with pytest.raises(SluiceError, match="name a version"):
        ModelRef("m").require_version()


def test_a_missing_region_is_one_line_with_exit_2(home, monkeypatch, capsys, tmp_path):
    # Given no region anywhere: no variable, no profile, no cdk.json here or above
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.chdir(tmp_path)
    assert main(["--stage", "dev", "models", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sluice: error: stage dev: no AWS region") and err.count("\n") == 1


def test_the_region_falls_back_to_cdk_json(tmp_path, monkeypatch):
    (tmp_path / "cdk.json").write_text(json.dumps({"context": {"dev:region": "eu-central-1"}}))
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert discovery._cdk_json_region("dev") == "eu-central-1"
    assert discovery._cdk_json_region("prod") is None
