"""``service-backup prune CONFIG [--destination NAME] [--dry-run]``: retention on demand.

The same policy the run applies after each upload. ``--dry-run`` prints every complete run
of each destination with ``keep`` (and the rules that keep it, as restic does) or
``delete``, and deletes nothing. Exit 0; 1 when a deletion (or a listing) failed; 2 for an
invalid config or an unknown ``--destination``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..errors import BackupError
from . import _common

if TYPE_CHECKING:
    from ..config import BackupConfig, DestinationSpec
    from ..plugins import PluginRegistry

HELP = "delete the runs each destination's retention does not keep (--dry-run: only show)"


def configure(parser: argparse.ArgumentParser) -> None:
    _common.add_destination_flag(parser, "the others are left alone")
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be deleted; delete nothing"
    )


def run(args: argparse.Namespace) -> int:
    config, registry = _common.load(args.config)
    try:
        specs = _common.select(config, args.destination)
    except _common.UsageError as exc:
        _common.error(str(exc))
        return _common.EXIT_INVALID
    status = _common.EXIT_OK
    for spec in specs:
        try:
            ok = _prune_one(spec, config, registry, args.dry_run)
        except Exception as exc:
            print(f"{spec.display_name}: FAIL {_common.reason(exc, config)}")
            ok = False
        if not ok:
            status = _common.EXIT_FAILED
    return status


def _prune_one(
    spec: DestinationSpec, config: BackupConfig, registry: PluginRegistry, dry_run: bool
) -> bool:
    from ..catalog import run_folders, run_root
    from ..prune import plan, prune

    policy = spec.retention
    if policy is None or not policy.active:
        print(f"{spec.display_name}: no retention configured, nothing deleted")
        return True
    with _common.opened(spec, registry) as destination:
        if dry_run:
            planned = plan(policy, run_folders(destination, run_root(config)))
            deletions = sum(1 for _, d in planned if not d.keep)
            print(
                f"{spec.display_name}: {policy.describe()}: {len(planned)} complete runs, "
                f"would keep {len(planned) - deletions}, delete {deletions} (dry run)"
            )
            for folder, decision in planned:
                verdict = "keep  " if decision.keep else "delete"
                why = f"  ({', '.join(decision.reasons)})" if decision.keep else ""
                print(f"  {folder.date.isoformat()}  {verdict}  {folder.files:>6} files{why}")
            return True
        outcome = prune(destination, run_root(config), policy)
    for folder in outcome.deleted:
        print(f"  {folder.date.isoformat()}  deleted  {folder.files} files, {folder.size} bytes")
    print(f"{spec.display_name}: kept {len(outcome.kept)}, deleted {len(outcome.deleted)}")
    for error in outcome.errors:
        print(f"{spec.display_name}: FAIL {_common.reason(BackupError(error), config)}")
    return not outcome.errors
