"""Stage settings from CDK context: defaults, overrides and one-line errors naming the key."""

from __future__ import annotations

import pytest

from infra.config import AppConfig, ConfigError

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


def test_prod_trusts_the_dev_deployer_role_for_promotion():
    prod = config().stage("prod")
    assert prod.trusted_role_arn == "arn:aws:iam::111111111111:role/sluice-dev-deployer"
    assert prod.promotion_role_name == "sluice-prod-promotion"
    assert config().stage("dev").trusted_role_arn is None


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
