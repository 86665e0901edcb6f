"""How one run's files land at one destination, and the manifest that commits them.

The manifest is the commit point: written last, through the destination's own atomic
``write``, only once every file arrived with the size and sha256 the upload hook reported. A
dated folder therefore never carries a manifest that does not describe exactly its bytes.

Same-day re-runs write the same keys. Where the destination promotes staged files
(``can_rename``: local folders and SFTP always, by rename; S3, Azure and GCS when the operator
sets ``promote_by_copy``, by server-side copy) and the day already has a complete run, the files
are staged under ``[<deployment>/].service-backup-staging/<backup_guid>/`` and promoted into the
dated folder by ``rename`` only after all arrived, so a re-run that fails while uploading
leaves the earlier complete run untouched (only a failure during the promotion itself leaves
the folder incomplete). Elsewhere (object stores by default, where promoting means copying
every byte again on the server) the earlier manifest is withdrawn before the first file is
overwritten: a re-run that fails half-way leaves an *incomplete* folder, never a mix of two
runs presented as complete.
"""

from __future__ import annotations

import contextlib
import datetime

import attrs

from .catalog import run_root
from .config import BackupConfig, DestinationSpec
from .context import RunContext
from .destination import Destination
from .errors import BackupError, DestinationError, ObjectNotFound
from .manifest import (
    Manifest,
    hostname,
    manifest_key,
    pending_placeholder,
    product_version,
    rfc3339,
    sorted_files,
)
from .plugins import PluginRegistry
from .results import UploadResult
from .source import Source, SourceFile

#: The folder, beside the dated folders, where staged runs wait to be promoted.
STAGING_FOLDER = ".service-backup-staging"


#: Staged files older than this are what a killed run left (no run stages for a day).
STALE_STAGING = datetime.timedelta(hours=24)


def store_run(
    spec: DestinationSpec,
    destination: Destination,
    files: list[SourceFile],
    run: RunContext,
    registry: PluginRegistry,
) -> UploadResult:
    """Upload ``files`` through the ``upload`` hook, then commit them with the manifest."""
    prefix = run.run_prefix
    earlier = has_manifest(destination, prefix)
    if earlier and destination.can_rename:
        return _staged(spec, destination, files, run, registry)
    if earlier:
        retire_manifest(destination, prefix, run)
    result = registry.hook.upload(spec=spec, destination=destination, files=files, run=run)
    manifest = build_manifest(run.config, run, files, result)
    write_manifest(destination, prefix, manifest)
    return result  # type: ignore[no-any-return]


def staging_root(run: RunContext) -> str:
    root = run_root(run.config)
    lead = f"{root}/" if root else ""
    return f"{lead}{STAGING_FOLDER}"


def staging_prefix(run: RunContext) -> str:
    return f"{staging_root(run)}/{run.backup_guid}"


def _staged(
    spec: DestinationSpec,
    destination: Destination,
    files: list[SourceFile],
    run: RunContext,
    registry: PluginRegistry,
) -> UploadResult:
    prefix = run.run_prefix
    staging = staging_prefix(run)
    sweep_staging(destination, run)
    try:
        result = registry.hook.upload(
            spec=spec, destination=destination, files=files,
            run=attrs.evolve(run, upload_prefix=staging),
        )  # fmt: skip
        manifest = build_manifest(run.config, run, files, result)
        retire_manifest(destination, prefix, run)  # the folder is incomplete from here ...
        destination.rename([(f"{staging}/{f.path}", f"{prefix}/{f.path}") for f in manifest.files])
    except BaseException:
        discard_staging(destination, staging, run)
        raise
    write_manifest(destination, prefix, manifest)  # ... to here: renames only, no uploads
    return result  # type: ignore[no-any-return]


def discard_staging(destination: Destination, staging: str, run: RunContext) -> None:
    """Best effort: what a failed staged run left (never anything outside its own folder)."""
    try:
        for info in list(destination.list(f"{staging}/")):
            with contextlib.suppress(ObjectNotFound):
                destination.delete(info.key)
    except Exception as exc:
        run.log.bind(error=str(exc)).debug(f"cannot remove the staged files under {staging}")


def sweep_staging(destination: Destination, run: RunContext) -> None:
    """Best effort: remove staged files older than ``STALE_STAGING`` (a killed run's).

    Called by staged runs only: a listing on every run would cost a destination whose
    ``list`` walks its whole tree (local) that walk each time, for leftovers that only a
    killed same-day re-run leaves. Only under this deployment's staging folder, and only
    objects whose store reports a modification time: a staged run of another VM in
    progress is never that old.
    """
    cutoff = datetime.datetime.now(datetime.UTC) - STALE_STAGING
    root = f"{staging_root(run)}/"
    try:
        stale = [
            info.key
            for info in destination.list(root)
            if info.modified is not None and _aware(info.modified) < cutoff
        ]
        for key in stale:
            with contextlib.suppress(ObjectNotFound):
                destination.delete(key)
    except Exception as exc:
        run.log.bind(error=str(exc)).warning(f"cannot remove stale staged files under {root}")
        return
    if stale:
        run.log.bind(files=len(stale)).info(f"removed stale staged files under {root}")


def _aware(moment: datetime.datetime) -> datetime.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def has_manifest(destination: Destination, prefix: str) -> bool:
    """Whether the dated folder holds a manifest: ``stat``, else the listing.

    ``stat`` is one request everywhere; where it is refused (the seed's S3 policy grants
    ListBucket and PutObject but not GetObject, so HEAD is denied) the listing answers.
    """
    key = manifest_key(prefix)
    try:
        destination.stat(key)
        return True
    except ObjectNotFound:
        return False
    except BackupError:
        return any(info.key == key for info in destination.list(key))


def retire_manifest(destination: Destination, prefix: str, run: RunContext) -> None:
    """Withdraw an earlier same-day manifest before the first file of this run is written.

    From here until this run's manifest is written the folder reads as *incomplete*: a re-run
    that fails half-way leaves an incomplete folder, never a mix of two runs described by the
    earlier manifest. The listing is asked first (the seed's IAM policy grants ListBucket and
    PutObject, not GetObject or DeleteObject); where deleting is refused, the manifest is
    overwritten with a placeholder that no reader takes for a manifest.
    """
    key = manifest_key(prefix)
    if not has_manifest(destination, prefix):
        return
    try:
        destination.delete(key)
        return
    except ObjectNotFound:
        return
    except BackupError as exc:
        run.log.bind(error=str(exc)).debug(
            "cannot delete the earlier manifest; replacing it with a placeholder"
        )
    placeholder = pending_placeholder(run.backup_guid, rfc3339(run.started_at))
    destination.write(key, Source.from_bytes(placeholder, f"placeholder {key}"))


def build_manifest(
    config: BackupConfig, run: RunContext, files: list[SourceFile], result: object
) -> Manifest:
    """The manifest of what the upload hook stored: one entry per source file, or an error.

    The hook's ``stored`` entries carry the sha256 of the bytes the destination received; a
    hook that took over and left a file out (or reported another size) fails the destination,
    since a manifest must describe exactly the stored bytes.
    """
    if not isinstance(result, UploadResult):
        raise DestinationError("no upload hook handled this destination: no manifest written")
    stored = {entry.path: entry for entry in result.stored}
    for file in files:
        entry = stored.get(file.relative)
        if entry is None:
            raise DestinationError(
                f"the upload reported no stored file for {file.relative}: no manifest written"
            )
        if entry.size != file.size:
            raise DestinationError(
                f"the upload reported {entry.size} bytes stored for {file.relative}, "
                f"expected {file.size}: no manifest written"
            )
    # Whether a path is escaped is the core's knowledge (scan_source), not the hook's; the
    # hook's own entry is kept where it already says the same (nearly always: no copy).
    listed = [
        entry if entry.escaped is file.escaped else attrs.evolve(entry, escaped=file.escaped)
        for file in files
        for entry in (stored[file.relative],)
    ]
    return Manifest(
        backup_guid=run.backup_guid,
        identifier=run.identifier,
        deployment_name=config.deployment_name or None,
        hostname=hostname(),
        started_at=rfc3339(run.started_at),
        finished_at=rfc3339(datetime.datetime.now(datetime.UTC)),
        source_folder=config.source_folder,
        version=product_version(),
        files=sorted_files(listed),
    )


def write_manifest(destination: Destination, prefix: str, manifest: Manifest) -> None:
    """Last write of a run: through the destination's own atomic ``write``, size checked.

    ``sync`` before it makes the run's files durable (a crash before the manifest is durable
    leaves an incomplete folder, never a complete-looking one); ``sync`` after it makes the
    manifest itself durable before the run reports success.
    """
    destination.sync()
    data = manifest.to_json()
    key = manifest_key(prefix)
    info = destination.write(key, Source.from_bytes(data, f"manifest {key}"))
    if info.size != len(data):
        raise DestinationError(
            f"stored size of {key} is {info.size} bytes, expected {len(data)}: manifest incomplete"
        )
    destination.sync()
