"""Stage settings from CDK context: defaults, overrides and one-line errors naming the key."""

from __future__ import annotations

import pytest

from infra.config import DEFAULT_RESERVED_CONCURRENCY, AppConfig, ConfigError

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
