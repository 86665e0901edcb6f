"""Every hook of service-backup, documented in one place.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose names match these
specs; pluggy calls them with the arguments they name (a subset is fine). Plugins are found
through entry points:

* group ``service_backup``: destination plugins. The entry-point *name* is the destination
  type used in the config (``s3 = "service_backup_s3"``); a module is imported only when a
  config uses its type, so a broken unrelated plugin cannot break a run.
* group ``service_backup.hooks``: hook plugins loaded for every run (command hooks, alerters).

Order of a run: ``identify`` → in-progress guard → ``run_state("start")`` → ``prepare`` →
``upload`` (once per destination, all attempted) → ``cleanup`` (only when every upload
succeeded) → ``run_state("finish")``; or, when the run failed, ``alert`` and
``run_state("fail")``. ``config_sections`` is called when the config is loaded, by every
command that reads one (``validate`` and ``check`` too), so hook plugins are imported then: a
hook plugin's module imports nothing heavy (``healthchecks``, ``apprise`` are examples).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .config import BackupConfig, ConfigSection, DestinationSpec
    from .context import RunContext
    from .destination import Destination, DestinationType
    from .results import UploadResult
    from .source import SourceFile

PROJECT = "service_backup"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def destination_types() -> list[DestinationType]:  # type: ignore[empty-body]
    """Register destination types.

    Called after a destination plugin is loaded. Return the ``DestinationType`` values the
    plugin provides (usually one, whose ``name`` equals the entry-point name).
    """


@hookspec(firstresult=True)
def identify(config: BackupConfig, run: RunContext) -> str | None:
    """Return the service-instance identifier for this run, or None.

    Called first. The first non-empty string wins and appears in every later log line as
    ``data.identifier`` (messages become ``ServiceBackup.WithIdentifier.…``). An exception is
    logged and the run goes on without an identifier.
    """


@hookspec
def prepare(config: BackupConfig, run: RunContext) -> None:
    """Make the files under ``source_folder`` ready (e.g. trigger a Redis dump).

    Called after the in-progress guard, before any upload. Raise ``BackupError`` (or
    ``CommandError``) to fail the run: nothing is uploaded, cleanup does not run, alerts fire.
    """


@hookspec(firstresult=True)
def upload(
    spec: DestinationSpec,
    destination: Destination,
    files: list[SourceFile],
    run: RunContext,
) -> UploadResult | None:
    """Upload ``files`` to one destination under ``run.remote_prefix``.

    Called once per configured destination, concurrently across destinations. The core
    provides the default implementation (streams every file through ``Destination.write``
    with ``destination.file_concurrency`` files in flight, checks every stored size) as a
    ``trylast`` hookimpl; a plugin may take over by returning an ``UploadResult`` first.
    Raise ``BackupError`` to fail this destination; the others are still attempted.
    """


@hookspec
def cleanup(config: BackupConfig, run: RunContext) -> None:
    """Tidy up after every upload succeeded (e.g. delete the dump).

    Called between ``Cleanup started`` and ``Cleanup completed successfully``. An exception is
    logged as ``Cleanup completed with error``; the run still counts as a success.
    """


@hookspec
def alert(config: BackupConfig, run: RunContext, error: str) -> None:
    """Tell someone that the run failed with ``error`` (one line, secret-free).

    Called once per failed run. Each alerter is called on its own: an exception from one is
    logged as ``error sending service alert`` and never hides the run's own error or stops
    other alerters. An alerter that is not configured logs so and returns.
    """


@hookspec
def config_sections() -> list[ConfigSection]:  # type: ignore[empty-body]
    """Declare top-level config sections this plugin reads.

    Return ``ConfigSection(key, config_class)`` values: the core builds ``config_class`` (an
    attrs class, secret fields typed ``Secret``) from the top-level ``key`` of the config file
    when it is loaded, reporting problems with their field path like any other key, and keeps
    rejecting keys nobody declared. Read the result with ``config.section(key)`` (None when
    the file has no such key).
    """


@hookspec
def run_state(config: BackupConfig, run: RunContext, state: str, error: str | None) -> None:
    """The run reached ``state``: ``"start"``, ``"finish"`` (success) or ``"fail"``.

    ``start`` comes after the in-progress guard let the run go, before ``prepare``; a run
    rejected by ``exit_if_in_progress`` reaches no state. ``error`` is the one-line,
    secret-free reason for ``fail`` and None otherwise. Each implementation is called on its
    own: an exception is logged and never changes the run's outcome. Keep it bounded in
    time (a dead man's switch ping, a chat notification): the run waits for it.
    """
