"""Bucket names that can never work are refused at validation: exit 2, field named, all reasons.

On AWS (no ``endpoint_url``) the current general purpose naming rules apply; with an
``endpoint_url`` only what botocore itself refuses to send, since S3-compatible stores have
rules of their own (Ceph RGW can be configured to accept uppercase letters and underscores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service_backup.config import structure_destination_config
from service_backup.errors import ConfigError
from service_backup_s3.config import S3Config
from tests.core.cli import run_cli, write_config

ENDPOINT = "https://minio.internal:9000"


def refusal(name: str, **extra: Any) -> str:
    raw = {"bucket_name": name, "bucket_path": "p", **extra}
    with pytest.raises(ConfigError) as info:
        structure_destination_config(raw, S3Config)
    text = str(info.value)
    assert text.startswith("config.bucket_name: "), f"field not named first: {text}"
    return text


def accepted(name: str, **extra: Any) -> None:
    config = structure_destination_config({"bucket_name": name, "bucket_path": "p", **extra},
                                          S3Config)  # fmt: skip
    assert config.bucket_name == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("ab", "2 characters (3 to 63 allowed)"),
        ("a" * 64, "64 characters (3 to 63 allowed)"),
        ("My-Bucket", "uppercase letters (BM)"),
        ("my_bucket", "underscores"),
        ("my bucket", "characters other than lowercase letters, digits, '.' and '-' (' ')"),
        ("my/bucket", "characters other than lowercase letters, digits, '.' and '-' ('/')"),
        ("-bucket", "does not start with a letter or digit"),
        (".bucket", "does not start with a letter or digit"),
        ("bucket-", "does not end with a letter or digit"),
        ("bucket.", "does not end with a letter or digit"),
        ("my..bucket", "two adjacent periods"),
        ("192.168.5.4", "formatted as an IP address"),
        ("xn--bucket", "starts with the reserved prefix xn--"),
        ("sthree-bucket", "starts with the reserved prefix sthree-"),
        ("sthree-configurator-x", "starts with the reserved prefix sthree-"),
        ("amzn-s3-demo-bucket", "starts with the reserved prefix amzn-s3-demo-"),
        ("bucket--ol-s3", "ends with --ol-s3, reserved for Object Lambda"),
        ("mfzwi23gnjvgw.mrap", "ends with .mrap, reserved for Multi-Region Access Points"),
        ("tables--table-s3", "ends with --table-s3, reserved for table buckets"),
        ("arn:aws:s3:us-east-1:12345:accesspoint/x", "not an S3 access point or Outposts ARN"),
    ],
)
def test_each_aws_rule(name: str, reason: str) -> None:
    text = refusal(name)
    assert reason in text, f"{name!r}: expected {reason!r} in {text!r}"
    assert "AWS S3" in text


@pytest.mark.parametrize(
    "name",
    [
        "abc",
        "a" * 63,
        "my-backups.example.com",
        "backups-2026",
        "1bucket9",
        "my-ap-hrzrlukc5m36ft7okagglf3gmwluquse1b-s3alias",  # an access point alias works
        "backups--usw2-az1--x-s3",  # a directory bucket
        "backups-111122223333-us-west-2-an",  # the account regional namespace
    ],
)
def test_names_that_work_on_aws_are_accepted(name: str) -> None:
    accepted(name)


def test_access_point_arns_are_accepted() -> None:
    accepted("arn:aws:s3:us-west-2:123456789012:accesspoint/backups")
    accepted("arn:aws:s3::123456789012:accesspoint/mfzwi23gnjvgw.mrap")
    accepted(
        "arn:aws:s3-outposts:us-west-2:123456789012:outpost/op-01ac5d28a6a232904/accesspoint/b"
    )


def test_every_problem_of_a_name_in_one_message() -> None:
    text = refusal("Bad_Bucket..")
    for reason in ("uppercase letters (B)", "underscores", "does not end with a letter or digit",
                   "two adjacent periods"):  # fmt: skip
        assert reason in text, f"{reason!r} missing from {text!r}"
    assert "endpoint_url: https://s3.amazonaws.com" in text, "no hint for legacy us-east-1 names"


@pytest.mark.parametrize(
    "name", ["Backups_2026", "ab", "a", "x" * 255, "my..bucket", "192.168.5.4", "xn--b", "-b-"]
)
def test_compatible_stores_get_what_botocore_sends(name: str) -> None:
    accepted(name, endpoint_url=ENDPOINT)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("x" * 256, "256 characters (at most 255)"),
        ("my bucket", "characters other than letters, digits, '.', '-' and '_' (' ')"),
        ("a/b", "('/')"),
        ("caf\u00e9", "('\u00e9')"),
    ],
)
def test_compatible_stores_refuse_what_botocore_never_sends(name: str, reason: str) -> None:
    text = refusal(name, endpoint_url=ENDPOINT)
    assert reason in text and "S3-compatible store" in text, text


def test_validate_exits_2_naming_the_field_with_other_problems(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "backup.yml",
        {
            "source_folder": str(tmp_path),
            "cron_schedule": "@daily",
            "destinations": [
                {"type": "s3", "config": {"bucket_name": "Prod_Backups", "bucket_path": "p"}},
                {"type": "s3", "config": {"bucket_name": "ok-bucket"}},
            ],
        },
    )
    result = run_cli("validate", str(config))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert "destinations[0].config.bucket_name: 'Prod_Backups' can never name a bucket" in (
        result.stderr
    ), result.stderr
    assert "uppercase letters (BP), underscores" in result.stderr
    assert "destinations[1].config.bucket_path: required field missing" in result.stderr, (
        "the other problems of the file are not reported with it"
    )
