"""Capture stream and monitoring resources in the synthesized service stack."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from aws_cdk.assertions import Match

from infra.constructs.capture import DATA_PREFIX
from sluice.serving.capture import partition_prefix


def test_capture_stream_partitions_by_model_version_day_and_hour(template):
    # Given the dev service stack
    service = template("Dev-Service")
    # Then one encrypted Firehose stream writes Parquet to the capture bucket, partitioned
    # by the model and version parsed from each record and by arrival day and hour
    service.has_resource_properties(
        "AWS::KinesisFirehose::DeliveryStream",
        {
            "DeliveryStreamEncryptionConfigurationInput": {"KeyType": Match.any_value()},
            "ExtendedS3DestinationConfiguration": Match.object_like(
                {
                    "BucketARN": Match.string_like_regexp("sluice-dev-capture-"),
                    "Prefix": DATA_PREFIX,
                    "ErrorOutputPrefix": Match.string_like_regexp("^capture-errors/"),
                    "DynamicPartitioningConfiguration": {"Enabled": True},
                    "CompressionFormat": "UNCOMPRESSED",  # Parquet compresses its pages
                    "ProcessingConfiguration": {
                        "Enabled": True,
                        "Processors": [
                            Match.object_like(
                                {
                                    "Type": "MetadataExtraction",
                                    "Parameters": Match.array_with(
                                        [
                                            {
                                                "ParameterName": "MetadataExtractionQuery",
                                                "ParameterValue": Match.string_like_regexp(
                                                    r'"model":\.model,"version":\.version'
                                                ),
                                            }
                                        ]
                                    ),
                                }
                            )
                        ],
                    },
                }
            ),
        },
    )


def test_capture_stream_prefix_matches_the_reader_layout():
    # The prefix Firehose evaluates must produce what sluice.serving.capture_reader lists
    moment = datetime(2026, 11, 25, 7, tzinfo=UTC)
    evaluated = (
        DATA_PREFIX.replace("!{partitionKeyFromQuery:model}", "credit")
        .replace("!{partitionKeyFromQuery:version}", "4")
        .replace("!{timestamp:yyyy-MM-dd}", "2026-11-25")
        .replace("!{timestamp:HH}", "07")
    )
    assert evaluated == partition_prefix("credit", 4, moment)


def test_drift_job_runs_on_a_schedule_per_model(template):
    service = template("Dev-Service")
    service.has_resource_properties(
        "AWS::Scheduler::Schedule",
        {
            "Name": "sluice-dev-credit-risk-drift",
            "ScheduleExpression": "rate(1 hour)",
            "Target": Match.object_like(
                {
                    "Input": Match.serialized_json(
                        {"model": "credit-risk", "window_minutes": 60, "concept": False}
                    )
                }
            ),
        },
    )
    # Concept drift on its own, hourly, over a day of labelled predictions
    service.has_resource_properties(
        "AWS::Scheduler::Schedule",
        {
            "Name": "sluice-dev-credit-risk-quality",
            "ScheduleExpression": "rate(1 hour)",
            "Target": Match.object_like(
                {
                    "Input": Match.serialized_json(
                        {
                            "model": "credit-risk",
                            "drift": False,
                            "quality_window_minutes": 1440,
                            "min_effect": 0.01,
                        }
                    )
                }
            ),
        },
    )
    # The job is the training image (pandas, scipy, matplotlib) running the monitor handler
    service.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "PackageType": "Image",
            "ImageConfig": {"Command": ["sluice.handlers.monitor.lambda_handler"]},
            "Environment": {
                "Variables": Match.object_like(
                    {"SLUICE_CAPTURE_BUCKET": Match.string_like_regexp("sluice-dev-capture-")}
                )
            },
        },
    )


def test_alarms_watch_the_worst_served_version_and_notify_the_encrypted_topic(template):
    service = template("Dev-Service")
    topic = {"Ref": Match.string_like_regexp("^MonitoringAlarms")}
    service.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "sluice-dev-credit-risk-drift-share",
            "Namespace": "Sluice/Drift",
            "MetricName": "DatasetDriftShare",
            "Dimensions": [{"Name": "Model", "Value": "credit-risk"}],
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 0,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [topic],
        },
    )
    # Per-feature drift alarms fire when 2 of the last 3 windows drifted (featureAlarmDatapoints)
    service.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "sluice-dev-credit-risk-drift-income",
            "MetricName": "PSI",
            "Dimensions": Match.array_with([{"Name": "Feature", "Value": "income"}]),
            "Threshold": 0.2,
            "DatapointsToAlarm": 2,
            "EvaluationPeriods": 3,
        },
    )
    # Concept drift: the whole interval of live minus registered F1 below -qualityMinEffect
    service.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "sluice-dev-credit-risk-f1-drop",
            "Namespace": "Sluice/Quality",
            "MetricName": "F1DeltaBound",
            "Statistic": "Minimum",
            "Dimensions": [{"Name": "Model", "Value": "credit-risk"}],
            "ComparisonOperator": "LessThanThreshold",
            "Threshold": -0.01,
        },
    )
    # And the label-free early warning on the estimated F1, M of N like the feature alarms
    service.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "sluice-dev-credit-risk-estimated-f1-drop",
            "Namespace": "Sluice/Drift",
            "MetricName": "EstimatedF1Delta",
            "ComparisonOperator": "LessThanThreshold",
            "Threshold": -0.03,
            "DatapointsToAlarm": 2,
            "EvaluationPeriods": 3,
        },
    )
    # No alarm is on the absolute F1 delta any more
    alarms = service.find_resources("AWS::CloudWatch::Alarm")
    assert all(a["Properties"].get("MetricName") != "F1Delta" for a in alarms.values())
    service.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})


def test_retraining_listens_to_the_drift_and_concept_alarms(template):
    service = template("Dev-Service")
    service.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": Match.object_like(
                {"detail-type": ["CloudWatch Alarm State Change"], "resources": Match.any_value()}
            )
        },
    )
    rules = service.find_resources("AWS::Events::Rule")
    alarm_rule = next(r for r in rules.values() if "CloudWatch Alarm State Change" in str(r))
    assert len(alarm_rule["Properties"]["EventPattern"]["resources"]) == 2


def test_labels_arrive_by_post_and_by_files_dropped_in_the_capture_bucket(template):
    service, stateful = template("Dev-Service"), template("Dev-Stateful")
    service.has_resource_properties("AWS::ApiGateway::Resource", {"PathPart": "labels"})
    service.has_resource_properties(
        "AWS::ApiGateway::Method", {"HttpMethod": "POST", "AuthorizationType": "AWS_IAM"}
    )
    service.has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {
                    "bucket": {"name": [Match.string_like_regexp("sluice-dev-capture-")]},
                    "object": {"key": [{"prefix": "labels/incoming/"}]},
                },
            }
        },
    )
    stateful.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": Match.string_like_regexp("sluice-dev-capture-"),
            "NotificationConfiguration": {"EventBridgeConfiguration": {"EventBridgeEnabled": True}},
        },
    )


def test_metric_writes_are_limited_to_the_monitoring_namespaces(template):
    service = template("Dev-Service")
    service.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": "cloudwatch:PutMetricData",
                                "Condition": {
                                    "StringEquals": {
                                        "cloudwatch:namespace": ["Sluice/Drift", "Sluice/Quality"]
                                    }
                                },
                            }
                        )
                    ]
                )
            }
        },
    )


def test_dashboard_shows_traffic_latency_errors_drift_and_live_f1(template):
    service = template("Dev-Service")
    (dashboard,) = service.find_resources(
        "AWS::CloudWatch::Dashboard", {"Properties": {"DashboardName": "sluice-dev-credit-risk-endpoint"}}
    ).values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for title in (
        "Traffic per version",
        "Latency",
        "Errors",
        "Dataset drift share",
        "Top drifting features",
        "Live F1",
        "F1 estimated (before labels) and live (labelled)",
    ):
        assert title in body
    assert "Sluice/Endpoint" in body and "ORDER BY MAX() DESC" in body
    assert "EstimatedF1" in body and "F1DeltaBound" in body


def test_the_drift_job_hands_large_windows_to_a_distributed_map(template):
    service = template("Dev-Service")
    machines = service.find_resources(
        "AWS::StepFunctions::StateMachine", {"Properties": {"StateMachineName": "sluice-dev-drift"}}
    )
    (machine,) = machines.values()
    definition = json.dumps(machine["Properties"]["DefinitionString"])
    # A Distributed Map reads the run's items from S3 and sketches each group in a child, then a merge
    for needle in ('\\"Mode\\":\\"DISTRIBUTED\\"', "states:::s3:getObject", '\\"step\\":\\"merge\\"'):
        assert needle in definition, needle
    # The steps run the drift_fanout handler in the training image
    service.has_resource_properties(
        "AWS::Lambda::Function",
        {"PackageType": "Image", "ImageConfig": {"Command": ["sluice.handlers.drift_fanout.lambda_handler"]}},
    )
    # And the scheduled job knows the state machine and may start it
    service.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "ImageConfig": {"Command": ["sluice.handlers.monitor.lambda_handler"]},
            "Environment": {
                "Variables": Match.object_like({"SLUICE_DRIFT_STATE_MACHINE_ARN": Match.any_value()})
            },
        },
    )
    service.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Action": "states:StartExecution", "Resource": Match.any_value()})]
                )
            }
        },
    )
