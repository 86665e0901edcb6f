"""What the observability tests share: reading a textfile, writing a run's manifest."""

from __future__ import annotations

import datetime
import hashlib
import uuid
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from service_backup.manifest import MANIFEST_NAME, Manifest
from service_backup.results import StoredFile

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample by (name, sorted labels), parsed by prometheus_client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def rfc3339(when: datetime.datetime) -> str:
    """The manifest's form: UTC, nanosecond digits, ``Z``."""
    utc = when.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}000Z"


def manifest_bytes(finished: datetime.datetime, files: dict[str, bytes]) -> bytes:
    stored = tuple(
        StoredFile(path, len(data), hashlib.sha256(data).hexdigest())
        for path, data in sorted(files.items())
    )
    return Manifest(
        backup_guid=str(uuid.uuid4()),
        identifier=None,
        deployment_name=None,
        hostname="test-vm",
        started_at=rfc3339(finished - datetime.timedelta(seconds=5)),
        finished_at=rfc3339(finished),
        source_folder="/var/vcap/store",
        version="test",
        files=stored,
    ).to_json()


def write_local_run(
    base: Path,
    date: datetime.date,
    finished: datetime.datetime | None,
    root: str = "",
    files: dict[str, bytes] | None = None,
) -> Path:
    """A dated run folder in a local destination; complete (with manifest) unless
    ``finished`` is None."""
    files = {"dump.rdb": b"redis data"} if files is None else files
    folder = base / root / date.strftime("%Y/%m/%d")
    folder.mkdir(parents=True, exist_ok=True)
    for path, data in files.items():
        (folder / path).write_bytes(data)
    if finished is not None:
        (folder / MANIFEST_NAME).write_bytes(manifest_bytes(finished, files))
    return folder
