"""What runs and uploads report."""

from __future__ import annotations

import attrs


@attrs.frozen
class StoredFile:
    """One source file as a destination received it: what the run manifest lists.

    ``escaped``: ``path`` is the %XX-escaped form of a name that is not UTF-8
    (``service_backup.names``); the core sets it from the source file, hooks need not.
    """

    path: str
    size: int
    sha256: str
    escaped: bool = False


@attrs.frozen
class UploadResult:
    """One destination's upload: how many files and bytes, how long, and what was stored.

    ``stored`` lists every uploaded file with the sha256 of the bytes the destination
    received; the core writes the run manifest from it, so an ``upload`` hook that takes over
    must fill it (``service_backup.upload.upload_one`` returns the entries).
    """

    destination_name: str
    files: int
    size_in_bytes: int
    duration_in_seconds: float
    stored: tuple[StoredFile, ...] = ()


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
