"""One backup run, start to finish.

The whole data flow of a run is ``run_backup``: identify → guard → prepare → upload to every
destination → cleanup → (on failure) alert. Each step's log line is one of the messages log
monitors watch for, worded exactly as the Go release wrote them.
"""

from __future__ import annotations

import datetime
import time
import uuid
from typing import Any

from loguru import logger

from . import commit
from .catalog import RunFolder, run_root
from .config import BackupConfig, DestinationSpec
from .context import RunContext
from .destination import DestinationContext
from .errors import BackupError, SourceError
from .guard import exclusive_run
from .manifest import MANIFEST_NAME
from .plugins import PluginRegistry
from .processes import ProcessManager
from .progress import NULL_PROGRESS, ProgressReporter
from .results import DestinationFailure, RunResult, UploadResult
from .secret import scrub, secret_field_values
from .source import SourceFile, scan_source

MAX_PARALLEL_DESTINATIONS = 4
REJECTED = "backup operation rejected"


def run_backup(
    config: BackupConfig,
    registry: PluginRegistry,
    processes: ProcessManager,
    now: datetime.datetime | None = None,
    progress: ProgressReporter | None = None,
) -> RunResult:
    """Run one backup; never raises (the result says how it went).

    Whatever raises, even where nothing was expected to (an unusable lock folder, a bug), the
    run ends like any failed run: ``Perform backup completed with error`` in the JSON log, the
    alert, the ``fail`` state; never a traceback that only reaches stderr.
    """
    run = RunContext(
        config=config,
        backup_guid=str(uuid.uuid4()),
        started_at=(now or datetime.datetime.now()).astimezone(),
        processes=processes,
        log=logger.bind(backup_guid=None),
        progress=progress or NULL_PROGRESS,
    )
    run.log = logger.bind(backup_guid=run.backup_guid)
    try:
        return _run(config, registry, run)
    except Exception as exc:
        error = _reason(exc, config)
        run.log.bind(error=error).error("Perform backup completed with error")
        return _failed(config, run, registry, RunResult(run.backup_guid, ok=False, error=error))


def _run(config: BackupConfig, registry: PluginRegistry, run: RunContext) -> RunResult:
    hook = registry.hook

    run.identifier = _identify(config, run, registry)
    if run.identifier:
        run.log = run.log.bind(identifier=run.identifier)

    with exclusive_run(config.source_folder, config.exit_if_in_progress) as may_run:
        if not may_run:
            run.log.bind(error=REJECTED).error(
                "Backup currently in progress, exiting. "
                "Another backup will not be able to start until this is completed."
            )
            return RunResult(run.backup_guid, ok=False, error=REJECTED, rejected=True)

        _run_state(config, run, registry, "start")
        run.log.info("Perform backup started")
        try:
            hook.prepare(config=config, run=run)
        except Exception as exc:
            error = _reason(exc, config)
            run.log.bind(error=error).error("Perform backup completed with error")
            return _failed(config, run, registry, RunResult(run.backup_guid, ok=False, error=error))
        run.log.info("Perform backup completed successfully")

        uploads, failures = _upload_everywhere(config, run, registry)
        if failures:
            error = "; ".join(f"destination {f.destination_name}: {f.error}" for f in failures)
            result = RunResult(
                run.backup_guid, ok=False, error=error, uploads=uploads, failures=failures
            )
            return _failed(config, run, registry, result)

        _cleanup(config, run, registry)
        _run_state(config, run, registry, "finish")
    return RunResult(run.backup_guid, ok=True, uploads=uploads)


def _failed(
    config: BackupConfig, run: RunContext, registry: PluginRegistry, result: RunResult
) -> RunResult:
    """A failed run: the alert hook, then the ``fail`` state, whatever either does.

    A run cut short by shutdown sends no alert: the drain window (15 s) cannot hold an alert
    that may retry for ``timeout_seconds``, and a deploy would page for every VM it updates.
    It logs ``Run interrupted by shutdown`` instead (docs/reliability.md).
    """
    assert result.error is not None
    if run.processes.stopping.is_set():
        run.log.bind(error=result.error).error("Run interrupted by shutdown; alert not sent")
    else:
        _alert(config, run, registry, result.error)
    _run_state(config, run, registry, "fail", result.error)
    return result


def _upload_everywhere(
    config: BackupConfig, run: RunContext, registry: PluginRegistry
) -> tuple[tuple[UploadResult, ...], tuple[DestinationFailure, ...]]:
    """Every destination attempted, a few at once; failures collected, never short-circuited."""
    try:
        files = scan_source(config.source_folder, log=run.log)
        _refuse_reserved_names(files)
    except Exception as exc:
        error = _reason(exc, config)
        failures = tuple(
            DestinationFailure(spec.display_name, error) for spec in config.destinations
        )
        for spec in config.destinations:
            _dest_log(run, spec).bind(error=error).error("Upload backup completed with error")
        return (), failures

    def one(spec: DestinationSpec) -> UploadResult | DestinationFailure:
        return _upload_to(spec, files, config, run, registry)

    if len(config.destinations) == 1:  # the usual case: no pool (nor its import) for one
        outcomes = [one(config.destinations[0])]
    else:
        from concurrent.futures import ThreadPoolExecutor

        workers = min(MAX_PARALLEL_DESTINATIONS, len(config.destinations))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="destination") as pool:
            outcomes = list(pool.map(one, config.destinations))
    uploads = tuple(o for o in outcomes if isinstance(o, UploadResult))
    failures = tuple(o for o in outcomes if isinstance(o, DestinationFailure))
    return uploads, failures


def _upload_to(
    spec: DestinationSpec,
    files: list[SourceFile],
    config: BackupConfig,
    run: RunContext,
    registry: PluginRegistry,
) -> UploadResult | DestinationFailure:
    log = _dest_log(run, spec)
    log.info("Upload backup started")
    started = time.monotonic()
    try:
        dtype = registry.destination_type(spec.type)
        destination = dtype.factory(
            spec.config, DestinationContext(spec.display_name, stop=run.processes.stopping)
        )
        with destination:
            log.info(
                f"about to upload {config.source_folder} to {dtype.label} remote path "
                f"{destination.describe(run.run_prefix)}"
            )
            destination.ensure_location()
            result = commit.store_run(spec, destination, files, run, registry)
    except Exception as exc:
        error = _reason(exc, config)
        log.bind(error=error).error("Upload backup completed with error")
        return DestinationFailure(spec.display_name, error)
    log.bind(
        duration_in_seconds=time.monotonic() - started,
        size_in_bytes=result.size_in_bytes,
        files=result.files,
    ).info("Upload backup completed successfully")
    if spec.retention is not None and spec.retention.active:
        _retain(spec, config, run, registry)
    return result


def _retain(
    spec: DestinationSpec, config: BackupConfig, run: RunContext, registry: PluginRegistry
) -> None:
    """Retention after a successful upload; a failure is logged and the run still succeeds."""
    from .prune import prune  # only configs with a retention policy get here

    assert spec.retention is not None
    log = _dest_log(run, spec)
    log.bind(policy=spec.retention.describe()).info("Retention started")

    def deleted(folder: RunFolder) -> None:
        log.bind(date=folder.date.isoformat(), files=folder.files, size_in_bytes=folder.size).info(
            "Retention deleted run"
        )

    try:
        dtype = registry.destination_type(spec.type)
        context = DestinationContext(spec.display_name, stop=run.processes.stopping)
        with dtype.factory(spec.config, context) as destination:
            outcome = prune(
                destination,
                run_root(config),
                spec.retention,
                protect=run.remote_prefix,
                on_deleted=deleted,
            )
    except Exception as exc:
        log.bind(error=_reason(exc, config)).error("Retention completed with error")
        return
    summary = log.bind(kept=len(outcome.kept), deleted=len(outcome.deleted))
    if outcome.errors:
        error = _reason(BackupError("; ".join(outcome.errors)), config)
        summary.bind(error=error).error("Retention completed with error")
    else:
        summary.info("Retention completed successfully")


def _refuse_reserved_names(files: list[SourceFile]) -> None:
    """The manifest's name is the run's own: a source file by that name would be overwritten
    by it (or replace it), so the run fails before anything is uploaded."""
    for file in files:
        if file.relative == MANIFEST_NAME:
            raise SourceError(
                f"source file {file.path} has the reserved name {MANIFEST_NAME} "
                "(the run manifest's key): rename or remove it"
            )


def _identify(config: BackupConfig, run: RunContext, registry: PluginRegistry) -> str | None:
    try:
        identifier = registry.hook.identify(config=config, run=run)
    except Exception as exc:
        run.log.bind(error=_reason(exc, config)).error(
            "Service identifier command failed, continuing without an identifier"
        )
        return None
    return identifier.strip() if isinstance(identifier, str) and identifier.strip() else None


def _cleanup(config: BackupConfig, run: RunContext, registry: PluginRegistry) -> None:
    """Only after every upload succeeded; a failure is logged and the run still succeeds."""
    run.log.info("Cleanup started")
    try:
        registry.hook.cleanup(config=config, run=run)
    except Exception as exc:
        run.log.bind(error=_reason(exc, config)).error("Cleanup completed with error")
        return
    run.log.info("Cleanup completed successfully")


def _alert(config: BackupConfig, run: RunContext, registry: PluginRegistry, error: str) -> None:
    """Each alerter on its own: one failing never stops another or hides the run's error."""
    kwargs = {"config": config, "run": run, "error": error}
    _each(registry.hook.alert, kwargs, config, run, "error sending service alert")


def _run_state(
    config: BackupConfig,
    run: RunContext,
    registry: PluginRegistry,
    state: str,
    error: str | None = None,
) -> None:
    kwargs = {"config": config, "run": run, "state": state, "error": error}
    _each(registry.hook.run_state, kwargs, config, run, "error notifying run state")


def _each(
    caller: Any, kwargs: dict[str, Any], config: BackupConfig, run: RunContext, message: str
) -> None:
    """Call every implementation of a hook on its own; an exception is logged, never raised."""
    for impl in reversed(caller.get_hookimpls()):
        try:
            impl.function(*[kwargs[name] for name in impl.argnames])
        except Exception as exc:
            run.log.bind(error=_reason(exc, config)).error(message)


def _dest_log(run: RunContext, spec: DestinationSpec):  # type: ignore[no-untyped-def]
    return run.log.bind(destination_name=spec.name) if spec.name else run.log


def _reason(exc: BaseException, config: BackupConfig) -> str:
    """One line, no traceback, no secret: what an operator reads in the log and the alert."""
    text = str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return scrub(text, secret_field_values(config))
