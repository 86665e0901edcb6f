"""The ``upload`` hook for ``scp`` destinations: small files in batches, bigger ones streamed.

The core's default hook writes one file per call, and over SFTP each file costs three round
trips (open; writes + fstat + close; rename) with thread wake-ups for every answer. For the
thousands of small files a backup often holds that makes round trips and the client's CPU
the limit. So this hook, which the core calls before its own (``upload`` is ``firstresult``),
groups files of up to ``BATCH_FILE_LIMIT`` into batches that ``ScpDestination.write_batch``
sends as three pipelined exchanges, and streams larger files through ``write`` as the
default hook does. It returns ``None`` for every other destination type, leaving them to the
core.

What a run reports is unchanged: the same source errors, the same size checks, the first
failure stops new work and is raised, shutdown interrupts the upload.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial

from service_backup.config import DestinationSpec
from service_backup.context import RunContext
from service_backup.destination import Destination
from service_backup.hookspecs import hookimpl
from service_backup.layout import MiB
from service_backup.results import StoredFile, UploadResult
from service_backup.source import Source, SourceFile
from service_backup.upload import check_stored, run_jobs, upload_one, upload_result

#: Files up to this size (one OpenSSH write request) go in batches; bigger ones are streamed
#: one by one. Batching 1 MiB files was tried (twice): the server spent 20-50% more CPU on
#: them than on streams (200 files of 1 MiB, OpenSSH 9.2), the client no less, and the run
#: took longer.
BATCH_FILE_LIMIT = 255 * 1024
#: At most this many files and bytes per batch: a batch is held in memory while it is sent
#: (``file_concurrency`` batches at once: 32 MiB), with enough requests in flight to hide
#: round trips.
BATCH_FILES = 128
BATCH_BYTES = 4 * MiB


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


@hookimpl
def upload(
    spec: DestinationSpec,
    destination: Destination,
    files: list[SourceFile],
    run: RunContext,
) -> UploadResult | None:
    # An ScpDestination exists only once its module was imported: other destinations' runs
    # never import paramiko through this hook.
    module = sys.modules.get(f"{__package__}.destination")
    if module is None or not isinstance(destination, module.ScpDestination):
        return None
    started = time.monotonic()
    prefix = run.remote_prefix
    groups, large = batches(files, BATCH_FILE_LIMIT)

    def send_group(group: list[SourceFile]) -> list[StoredFile]:
        sources = [Source.from_file(f) for f in group]
        try:
            keys = [f"{prefix}/{f.relative}" for f in group]
            stored = destination.write_batch(list(zip(keys, sources, strict=True)))
            for info, source in zip(stored, sources, strict=True):
                check_stored(info.key, info.size, source)
            return [
                StoredFile(path=f.relative, size=f.size, sha256=s.sha256)
                for f, s in zip(group, sources, strict=True)
            ]
        finally:
            for source in sources:
                source.close()

    def send_large(file: SourceFile) -> list[StoredFile]:
        return [upload_one(destination, f"{prefix}/{file.relative}", file)]

    picker = _Picker(large, groups, destination.stream_concurrency)
    work = [partial(picker.run, send_large, send_group)] * (len(large) + len(groups))
    results = run_jobs(work, destination.file_concurrency, run)
    return upload_result(spec, [s for part in results for s in part], started)


class _Picker:
    """Hands each worker its next file or batch: at most ``limit`` streams at once.

    Streams (biggest first) are bound by the client's CPU, not by round trips: more than
    ``ScpDestination.stream_concurrency`` at once only cost CPU (see there). The other workers
    take batches meanwhile, so a big dump and many small files still go up side by side; a
    worker with neither a batch nor a free stream slot waits for a stream to end. Every job
    takes exactly one item, so one is always left for it.
    """

    def __init__(self, large: list[SourceFile], groups: list[list[SourceFile]], limit: int) -> None:
        self.large = deque(large)
        self.groups = deque(groups)
        self.limit = max(1, limit)
        self.streaming = 0
        self.changed = threading.Condition()

    def run(
        self,
        send_large: Callable[[SourceFile], list[StoredFile]],
        send_group: Callable[[list[SourceFile]], list[StoredFile]],
    ) -> list[StoredFile]:
        with self.changed:
            while not (self.large and self.streaming < self.limit) and not self.groups:
                self.changed.wait()
            if not (self.large and self.streaming < self.limit):
                group = self.groups.popleft()
                file = None
            else:
                file = self.large.popleft()
                self.streaming += 1
        if file is None:
            return send_group(group)
        try:
            return send_large(file)
        finally:
            with self.changed:
                self.streaming -= 1
                self.changed.notify()
