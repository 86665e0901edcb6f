"""``service-backup prune CONFIG [--destination NAME] [--dry-run]``: retention on demand.

The same policy the run applies after each upload. ``--dry-run`` prints every complete run
of each destination with ``keep`` (and the rules that keep it, as restic does) or
``delete``, and deletes nothing. Exit 0; 1 when a deletion (or a listing) failed; 2 for an
invalid config or an unknown ``--destination``.
"""

from __future__ import annotations

import argparse
import sys

from ..catalog import run_folders, run_root
from ..config import DestinationSpec
from ..destination import DestinationContext
from ..errors import BackupError, ConfigError, one_line
from ..plugins import PluginRegistry
from ..prune import plan, prune
from ..secret import scrub, secret_field_values

HELP = "delete the runs each destination's retention does not keep (--dry-run: only show)"
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--destination", metavar="NAME", help="only this destination")
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be deleted; delete nothing"
    )


def run(args: argparse.Namespace) -> int:
    from ..config import load_config

    registry = PluginRegistry(load_hook_plugins=False)
    try:
        config = load_config(args.config, registry)
        specs = select(config.destinations, args.destination)
    except ConfigError as exc:
        print(f"service-backup: invalid config {args.config}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    status = EXIT_OK
    for spec in specs:
        try:
            ok = _prune_one(spec, registry, run_root(config), args.dry_run)
        except Exception as exc:
            text = str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
            text = scrub(one_line(text), secret_field_values(spec.config))
            print(f"{spec.display_name}: FAIL {text}")
            ok = False
        if not ok:
            status = EXIT_FAILED
    return status


def select(specs: tuple[DestinationSpec, ...], name: str | None) -> tuple[DestinationSpec, ...]:
    """Every destination, or the one called ``name`` (ConfigError naming the known ones)."""
    if name is None:
        return specs
    chosen = tuple(s for s in specs if s.display_name == name)
    if not chosen:
        known = ", ".join(s.display_name for s in specs) or "none"
        raise ConfigError(f"--destination: no destination named '{name}' (configured: {known})")
    return chosen


def _prune_one(spec: DestinationSpec, registry: PluginRegistry, root: str, dry_run: bool) -> bool:
    policy = spec.retention
    if policy is None or not policy.active:
        print(f"{spec.display_name}: no retention configured, nothing deleted")
        return True
    dtype = registry.destination_type(spec.type)
    with dtype.factory(spec.config, DestinationContext(spec.display_name)) as destination:
        if dry_run:
            planned = plan(policy, run_folders(destination, root))
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
        outcome = prune(destination, root, policy)
    for folder in outcome.deleted:
        print(f"  {folder.date.isoformat()}  deleted  {folder.files} files, {folder.size} bytes")
    print(f"{spec.display_name}: kept {len(outcome.kept)}, deleted {len(outcome.deleted)}")
    for error in outcome.errors:
        print(f"{spec.display_name}: FAIL {scrub(error, secret_field_values(spec.config))}")
    return not outcome.errors
