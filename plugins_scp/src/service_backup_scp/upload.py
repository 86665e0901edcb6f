"""The ``upload`` hook for ``scp`` destinations: small files in batches, big ones streamed.

The core's default hook writes one file per call, and over SFTP each file costs three round
trips (open; write + fstat + close; rename) with a thread wake-up per reply. For the thousands
of small files a backup often holds that makes the client's CPU the limit. So this hook, which
the core calls before its own (``upload`` is ``firstresult``), groups files that fit one write
request into batches that ``ScpDestination.write_batch`` sends as three pipelined exchanges,
and streams larger files through ``write`` as the default hook does. It returns ``None`` for
every other destination type, leaving them to the core.

What a run reports is unchanged: the same source errors, the same size checks, the first
failure stops new work and is raised, shutdown interrupts the upload.
"""

from __future__ import annotations

import time
from functools import partial

from service_backup.config import DestinationSpec
from service_backup.context import RunContext
from service_backup.destination import Destination
from service_backup.errors import DestinationError, SourceError
from service_backup.hookspecs import hookimpl
from service_backup.results import UploadResult
from service_backup.source import SourceFile
from service_backup.upload import open_source, run_jobs, upload_one

#: At most this many files and bytes per batch: bounded memory (a batch is read into memory,
#: and framed once more to send) with enough requests in flight to hide round trips.
BATCH_FILES = 64
BATCH_BYTES = 1024 * 1024


def batches(files: list[SourceFile], limit: int) -> tuple[list[list[SourceFile]], list[SourceFile]]:
    """Small files grouped (in the given order) and the large files, biggest first."""
    groups: list[list[SourceFile]] = []
    current: list[SourceFile] = []
    current_bytes = 0
    for file in files:
        if file.size > limit:
            continue
        if current and (len(current) >= BATCH_FILES or current_bytes + file.size > BATCH_BYTES):
            groups.append(current)
            current, current_bytes = [], 0
        current.append(file)
        current_bytes += file.size
    if current:
        groups.append(current)
    large = sorted((f for f in files if f.size > limit), key=lambda f: -f.size)
    return groups, large


def read_small(file: SourceFile) -> bytes:
    """The whole (small) file, checked against the size it had when listed."""
    with open_source(file) as handle:
        data = handle.read(file.size + 1)
    if len(data) != file.size:
        raise SourceError(
            f"source file {file.path} changed size during the run "
            f"({file.size} bytes when listed, {len(data)} read)"
        )
    return data


@hookimpl
def upload(
    spec: DestinationSpec,
    destination: Destination,
    files: list[SourceFile],
    run: RunContext,
) -> UploadResult | None:
    from .destination import ScpDestination  # loaded already: the destination exists

    if not isinstance(destination, ScpDestination):
        return None
    started = time.monotonic()
    prefix = run.remote_prefix
    groups, large = batches(files, destination.small_file_limit())

    def send_group(group: list[SourceFile]) -> int:
        items = [(f"{prefix}/{f.relative}", read_small(f)) for f in group]
        stored = destination.write_batch(items)
        for info, file in zip(stored, group, strict=True):
            if info.size != file.size:
                raise DestinationError(
                    f"stored size of {info.key} is {info.size} bytes, expected {file.size}: "
                    "upload incomplete"
                )
        return sum(f.size for f in group)

    jobs = [partial(upload_one, destination, f"{prefix}/{f.relative}", f) for f in large]
    jobs += [partial(send_group, group) for group in groups]
    total = run_jobs(jobs, destination.file_concurrency, run)
    return UploadResult(
        destination_name=spec.display_name,
        files=len(files),
        size_in_bytes=total,
        duration_in_seconds=time.monotonic() - started,
    )
