"""What the embedded local AWS's CloudFormation creates matches the template where moto falls short:
declared bucket versioning and the package type of container-image functions."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from localaws.cloudformation.models import BUCKET_VERSIONING, FUNCTION_PACKAGE_TYPE

pytestmark = pytest.mark.local


def _declared(local_aws, resource_type: str) -> dict[str, dict]:
    """Template properties of each deployed resource of one type, by physical id."""
    found = {}
    for stack, deployed in zip(local_aws.stacks, local_aws.deployed, strict=True):
        for resource in deployed.resources:
            if resource.resource_type == resource_type:
                found[resource.physical_id] = stack.template["Resources"][resource.logical_id].get(
                    "Properties", {}
                )
    return found


def test_buckets_declared_versioned_are_versioned(local_aws):
    # Given the stage's buckets, every one declared with VersioningConfiguration Enabled
    buckets = _declared(local_aws, "AWS::S3::Bucket")
    versioned = [b for b, p in buckets.items() if p.get("VersioningConfiguration") == {"Status": "Enabled"}]
    assert len(versioned) >= 3
    # Then S3 reports them versioned, as AWS does after CreateStack
    s3 = local_aws.client("s3")
    for bucket in versioned:
        assert s3.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled", bucket


def test_lineage_of_data_in_a_versioned_bucket_names_its_version(local_aws):
    from sluice.pipelines.datasource import load_table, write_table
    from sluice.registry.lineage import Lineage

    # Given a training file written to the work bucket twice
    work = local_aws.physical_id("Work", resource_type="AWS::S3::Bucket")
    uri = f"s3://{work}/datasets/credit-risk/lineage.csv"
    first = write_table(pd.DataFrame({"a": [1, 2]}), uri)
    second = write_table(pd.DataFrame({"a": [1, 2, 3]}), uri)
    # Then each write has its own S3 VersionId, and what is read back names the newest
    assert first.version_id and second.version_id and first.version_id != second.version_id
    frame, read = load_table(uri)
    assert len(frame) == 3 and read.version_id == second.version_id
    # And the registry's lineage records that VersionId, not the ETag it falls back to
    lineage = Lineage.from_data(uri, rows=len(frame))
    assert lineage.data_version == second.version_id and lineage.data_version != second.etag


def test_container_functions_show_package_type_image(local_aws):
    # Given the functions the template declares as container images
    images = {n: p for n, p in _declared(local_aws, "AWS::Lambda::Function").items() if p.get("PackageType")}
    assert images and {p["PackageType"] for p in images.values()} == {"Image"}
    client = local_aws.client("lambda")
    # Then GetFunction reports each as an image, with its URI and the template's command
    for name, props in images.items():
        found = client.get_function(FunctionName=name)
        assert found["Configuration"]["PackageType"] == "Image", name
        assert found["Configuration"]["Architectures"] == props.get("Architectures", ["x86_64"])
        command = found["Configuration"]["ImageConfigResponse"]["ImageConfig"]["Command"]
        assert command == props["ImageConfig"]["Command"]
        assert found["Code"]["RepositoryType"] == "ECR"
        assert ".dkr.ecr." in found["Code"]["ImageUri"] and "container-assets" in found["Code"]["ImageUri"]
    # And ListFunctions agrees, while zip functions stay Zip
    listed = {
        f["FunctionName"]: f["PackageType"]
        for page in client.get_paginator("list_functions").paginate()
        for f in page["Functions"]
    }
    assert {n: listed[n] for n in images} == dict.fromkeys(images, "Image")
    assert listed[local_aws.physical_id("RegistryApiHandler", resource_type="AWS::Lambda::Function")] == "Zip"


def test_container_functions_still_run_locally(local_aws):
    # Given the batch failure notifier, a container-image function
    name = local_aws.physical_id("BatchNotifyFunction", resource_type="AWS::Lambda::Function")
    configuration = local_aws.client("lambda").get_function(FunctionName=name)["Configuration"]
    assert configuration["PackageType"] == "Image"
    # When it is invoked
    event = {"summary": {"manifest": {"run_id": "r1", "model": "credit-risk", "reasons": ["test"]}}}
    response = local_aws.client("lambda").invoke(FunctionName=name, Payload=json.dumps(event))
    # Then its CMD ran from the source root, as before
    assert "FunctionError" not in response, response["Payload"].read()
    assert json.loads(response["Payload"].read())["run_id"] == "r1"


def test_the_patches_name_the_gaps_they_fill():
    assert FUNCTION_PACKAGE_TYPE.is_applied() and BUCKET_VERSIONING.is_applied()
    assert "PackageType" in FUNCTION_PACKAGE_TYPE.gap and "VersioningConfiguration" in BUCKET_VERSIONING.gap
