"""Pruning: apply a destination's retention policy to the runs it holds.

Only through the ``Destination`` interface (list, open_read, delete), so every plugin,
third-party ones included, gets retention without a line of its own. Only complete runs are
ever deleted; incomplete folders and everything outside the dated folders are never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs

from .catalog import RunFolder, run_folders
from .destination import Destination
from .errors import BackupError, ObjectNotFound, one_line
from .manifest import MANIFEST_NAME
from .retention import Decision, RetentionPolicy, decide

#: Runs deleted at once per destination while pruning (each run's files in turn).
DELETE_CONCURRENCY = 8


@attrs.frozen
class PruneResult:
    kept: tuple[RunFolder, ...]
    deleted: tuple[RunFolder, ...]
    errors: tuple[str, ...]


def plan(
    policy: RetentionPolicy, folders: Sequence[RunFolder], protect: str | None = None
) -> list[tuple[RunFolder, Decision]]:
    """Every complete folder with its decision; ``protect`` (the run just written) is kept."""
    complete = [f for f in folders if f.complete]
    by_date = {d.date: d for d in decide(policy, [f.date for f in complete])}
    planned = []
    for folder in complete:
        decision = by_date[folder.date]
        if folder.prefix == protect and not decision.keep:
            decision = Decision(folder.date, ("this run",))
        planned.append((folder, decision))
    return planned


def delete_run(destination: Destination, folder: RunFolder) -> None:
    """Manifest first (the folder is incomplete from then on), then its files.

    A file already gone counts as deleted; the first other failure is raised after every
    file was attempted, leaving an incomplete folder (never a manifest naming missing files).
    """
    _delete(destination, f"{folder.prefix}/{MANIFEST_NAME}")
    errors = [e for e in (_try_delete(destination, o.key) for o in folder.objects) if e]
    if errors:
        raise BackupError(f"{len(errors)} of {folder.files} files not deleted: {errors[0]}")


def _delete(destination: Destination, key: str) -> None:
    with contextlib.suppress(ObjectNotFound):
        destination.delete(key)


def _try_delete(destination: Destination, key: str) -> str | None:
    try:
        _delete(destination, key)
    except Exception as exc:
        text = str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
        return one_line(f"{key}: {text}")
    return None


def prune(
    destination: Destination,
    root: str,
    policy: RetentionPolicy,
    *,
    protect: str | None = None,
    on_deleted: Callable[[RunFolder], Any] | None = None,
) -> PruneResult:
    """Apply ``policy`` to the complete runs of ``destination`` under ``root``.

    Incomplete folders and everything outside dated folders are never looked at for
    deletion. Raises ``BackupError`` only when the runs cannot be listed; failed deletions
    are collected in the result.
    """
    planned = plan(policy, run_folders(destination, root), protect)
    kept = [folder for folder, decision in planned if decision.keep]
    doomed = [folder for folder, decision in planned if not decision.keep]

    def one(folder: RunFolder) -> str | None:
        try:
            delete_run(destination, folder)
        except Exception as exc:
            text = str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
            return one_line(f"run {folder.date.isoformat()}: {text}")
        if on_deleted is not None:
            on_deleted(folder)
        return None

    with ThreadPoolExecutor(DELETE_CONCURRENCY, thread_name_prefix="prune") as pool:
        outcomes = list(pool.map(one, doomed))
    deleted = [f for f, error in zip(doomed, outcomes, strict=True) if error is None]
    errors = [error for error in outcomes if error is not None]
    return PruneResult(tuple(kept), tuple(deleted), tuple(errors))
