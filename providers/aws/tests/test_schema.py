"""The bundled service schema matches botocore, and catches what botocore skips."""

from __future__ import annotations

from cloudnn_aws._schema import extract, load_schema, validate

_GOOD = {
    "TrainingJobName": "good-name-1",
    "RoleArn": "arn:aws:iam::123456789012:role/x",
    "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
    "OutputDataConfig": {"S3OutputPath": "s3://b/p"},
    "ResourceConfig": {
        "InstanceType": "ml.m5.xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 30,
    },
    "StoppingCondition": {"MaxRuntimeInSeconds": 100},
}


def test_bundled_schema_matches_the_installed_botocore() -> None:
    # if this fails after a botocore upgrade: python -m cloudnn_aws._schema
    assert extract() == load_schema()


def test_a_valid_request_has_no_problems() -> None:
    assert validate("sagemaker", "CreateTrainingJob", _GOOD) == []


def test_patterns_enums_lengths_types_and_unknown_members_are_caught() -> None:
    bad = {
        **_GOOD,
        "TrainingJobName": "bad_name!",
        "RoleArn": "x",
        "AlgorithmSpecification": {
            "TrainingImage": "img",
            "TrainingInputMode": "Stream",
        },
        "ResourceConfig": {**_GOOD["ResourceConfig"], "InstanceType": "ml.m5.huge"},
        "HyperParameters": {"epochs": 3},
        "Bogus": 1,
    }
    del bad["OutputDataConfig"]
    found: dict[str, str] = {}
    for p in validate("sagemaker", "CreateTrainingJob", bad):
        found[p.path] = f"{found.get(p.path, '')} {p.message}"
    assert "does not match" in found["TrainingJobName"]  # pattern: botocore skips it
    assert "at least 20" in found["RoleArn"]
    assert "not one of" in found["AlgorithmSpecification.TrainingInputMode"]  # enum
    assert "ml.m5.xlarge" in found["ResourceConfig.InstanceType"]  # a close match
    assert "expected string" in found["HyperParameters.epochs"]
    assert "unknown member" in found["Bogus"]
    assert found["OutputDataConfig"].strip() == "required but missing"


def test_java_only_patterns_are_translated() -> None:
    # Tags use \\p{L}\\p{Z}\\p{N}: letters, spaces and digits of any script
    ok = {"Key": "équipe 1", "Value": "vision"}
    bad = {"Key": "bad|key", "Value": "x"}
    good = validate("sagemaker", "CreateTrainingJob", {**_GOOD, "Tags": [ok]})
    assert good == []
    found = validate("sagemaker", "CreateTrainingJob", {**_GOOD, "Tags": [bad]})
    assert [p.path for p in found] == ["Tags[0].Key"]
