"""What runs and uploads report."""

from __future__ import annotations

import attrs


@attrs.frozen
class UploadResult:
    """One destination's upload: how many files and bytes, how long."""

    destination_name: str
    files: int
    size_in_bytes: int
    duration_in_seconds: float


@attrs.frozen
class DestinationFailure:
    destination_name: str
    error: str


@attrs.frozen
class RunResult:
    """The outcome of one run. ``error`` is the one-line reason when ``ok`` is False."""

    backup_guid: str
    ok: bool
    error: str | None = None
    rejected: bool = False
    uploads: tuple[UploadResult, ...] = ()
    failures: tuple[DestinationFailure, ...] = ()
