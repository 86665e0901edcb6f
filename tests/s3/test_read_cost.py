"""What a restore pays per object: timestamps parsed without dateutil, the same values.

botocore parses every ``LastModified`` (one per GetObject, one per listed object) with
dateutil's general parser; the destination's clients parse S3's two forms directly
(``_parse_timestamp``). These tests hold it to botocore's own results, on the forms S3 sends
and against moto's real answers.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import pytest
from botocore.utils import parse_timestamp

from service_backup.source import Source
from service_backup_s3.destination import _parse_timestamp

from .test_s3 import open_destination

FORMS = [
    "Tue, 01 Dec 2026 13:49:37 GMT",  # response headers (RFC 7231)
    "Wed, 29 Feb 2028 00:00:00 GMT",
    "2026-12-01T13:49:37.000Z",  # XML bodies (ISO 8601), as S3 and moto send them
    "2026-12-01T13:49:37.123456Z",
    "2026-12-01T13:49:37+02:00",
    "2026-12-01T13:49:37",  # no zone: botocore's parser decides
    "1764596977",  # epoch seconds: botocore's parser
    1764596977,
]


@pytest.mark.parametrize("value", FORMS)
def test_timestamps_parse_as_botocore_parses_them(value: Any) -> None:
    ours, theirs = _parse_timestamp(value), parse_timestamp(value)
    assert ours == theirs, f"{value!r}: parsed as {ours!r}, botocore says {theirs!r}"
    assert (ours.tzinfo is None) == (theirs.tzinfo is None), f"{value!r}: zone differs"


def test_destination_reads_moto_timestamps_as_botocore_does(
    s3_config: dict[str, Any], s3_admin: Any
) -> None:
    """stat (a header) and list (XML) give the times boto3's stock client reads."""
    data = os.urandom(16 * 1024)
    with open_destination(s3_config) as dest:
        factory = dest.client._endpoint._response_parser_factory  # what parses each response
        parser = factory.create_parser("rest-xml")._timestamp_parser
        assert parser is _parse_timestamp, f"the client parses timestamps with {parser!r}"
        dest.ensure_location()
        dest.write("2026/12/01/a.bin", Source.from_bytes(data, "a.bin"))
        full = "backups/redis/2026/12/01/a.bin"
        head = s3_admin.head_object(Bucket=s3_config["bucket_name"], Key=full)
        listed = s3_admin.list_objects_v2(Bucket=s3_config["bucket_name"])["Contents"]
        info = dest.stat("2026/12/01/a.bin")
        assert info.modified == head["LastModified"], (
            f"stat says {info.modified!r}, boto3 reads the header as {head['LastModified']!r}"
        )
        assert isinstance(info.modified, datetime.datetime) and info.modified.tzinfo
        ours = {o.key: o.modified for o in dest.list("2026/")}
        assert ours == {"2026/12/01/a.bin": listed[0]["LastModified"]}, (
            f"listing times {ours!r} differ from boto3's {listed!r}"
        )
        with dest.open_read("2026/12/01/a.bin") as stream:
            assert stream.read() == data, "a small object read back differs from what was put"
