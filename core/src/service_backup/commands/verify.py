"""``service-backup verify``: is a backup intact, as far as the destination can tell?

By default the newest complete run of each destination; ``--date`` one day's run; ``--all``
every complete run. Every file the manifest lists must be in the listing with its size;
``--full`` also reads every object back (a few at once, streamed) and compares its sha256 with
the manifest's. One line per destination and run, ``ok`` or ``FAIL`` with every problem found;
exit 1 when anything is wrong, including a destination with no complete run at all.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

import attrs

from ..destination import Destination
from ..manifest import unsafe_path
from ..results import StoredFile
from . import _common

if TYPE_CHECKING:
    from ..catalog import RunFolder

HELP = "check that backups are complete and intact (--full reads every object back)"

READ_CHUNK = 1024 * 1024


def configure(parser: argparse.ArgumentParser) -> None:
    _common.add_destination_flag(parser, "default: all")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--date", type=_common.parse_date, metavar="YYYY-MM-DD",
                       help="the run of that day (default: the newest complete run)")  # fmt: skip
    which.add_argument("--all", action="store_true", help="every complete run")
    parser.add_argument("--full", action="store_true",
                        help="also read every object back and compare its sha256")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")


@attrs.frozen
class Verdict:
    """One destination and run: what ``verify --json`` prints per entry, plus table details."""

    destination: str
    date: str | None
    problems: tuple[str, ...]
    files: int | None = None
    size: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def document(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "date": self.date,
            "ok": self.ok,
            "problems": list(self.problems),
        }


def sha256_of(destination: Destination, key: str) -> tuple[str, int]:
    """The sha256 and length of a stored object, read in bounded chunks."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    with destination.open_read(key) as stream:
        while chunk := stream.read(READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_folder(
    destination: Destination, folder: RunFolder, full: bool, describe_error: Any
) -> list[str]:
    """Every problem with one complete run folder, file by file, sorted by path."""
    manifest = folder.manifest
    if manifest is None:
        return [f"run is incomplete: {folder.manifest_error or 'no manifest'}"]
    listed = {o.key: o for o in folder.objects}
    problems: list[str] = []
    to_read: list[StoredFile] = []
    for entry in manifest.files:
        unsafe = unsafe_path(entry.path)
        if unsafe:
            problems.append(f"{entry.path!r}: {unsafe} in the manifest")
            continue
        stored = listed.get(f"{folder.prefix}/{entry.path}")
        if stored is None:
            problems.append(f"{entry.path}: missing")
        elif stored.size != entry.size:
            problems.append(f"{entry.path}: size {stored.size}, manifest says {entry.size}")
        else:
            to_read.append(entry)
    if full and to_read:

        def read_back(entry: StoredFile) -> str | None:
            try:
                digest, size = sha256_of(destination, f"{folder.prefix}/{entry.path}")
            except Exception as exc:
                return f"{entry.path}: cannot be read back: {describe_error(exc)}"
            if size != entry.size:
                return f"{entry.path}: read back {size} bytes, manifest says {entry.size}"
            if digest != entry.sha256:
                return f"{entry.path}: sha256 mismatch (stored {digest}, manifest {entry.sha256})"
            return None

        from concurrent.futures import ThreadPoolExecutor

        workers = max(1, min(destination.file_concurrency, len(to_read)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
            problems.extend(p for p in pool.map(read_back, to_read) if p)
    return problems


def run(args: argparse.Namespace) -> int:
    config, registry = _common.load(args.config)
    try:
        specs = _common.select(config, args.destination)
    except _common.UsageError as exc:
        _common.error(str(exc))
        return _common.EXIT_INVALID

    def describe(exc: BaseException) -> str:
        return _common.reason(exc, config)

    verdicts: list[Verdict] = []
    for spec in specs:
        name = spec.display_name
        try:
            with _common.opened(spec, registry) as destination:
                folders = _common.run_folders_of(destination, config)
                chosen, missing = choose(folders, args)
                if missing:
                    verdicts.append(Verdict(name, _common.iso(args.date), (missing,)))
                for folder in chosen:
                    problems = check_folder(destination, folder, args.full, describe)
                    manifest = folder.manifest
                    verdicts.append(
                        Verdict(
                            name,
                            folder.date.isoformat(),
                            tuple(problems),
                            files=manifest.file_count if manifest else folder.files,
                            size=manifest.total_size if manifest else folder.size,
                        )
                    )
        except Exception as exc:  # unlistable, unreadable manifest store...: that one fails
            verdicts.append(Verdict(name, _common.iso(args.date), (describe(exc),)))
    if args.json:
        print(json.dumps([v.document() for v in verdicts], indent=1, ensure_ascii=False))
    else:
        print(human(verdicts, args.full))
    return _common.EXIT_OK if verdicts and all(v.ok for v in verdicts) else _common.EXIT_FAILED


def choose(folders: list[RunFolder], args: argparse.Namespace) -> tuple[list[RunFolder], str]:
    """The folders to check and, when there is nothing to check, the problem that makes."""
    if args.date is not None:
        matching = [f for f in folders if f.date == args.date]
        if not matching:
            return [], f"no run on {args.date.isoformat()}"
        return matching, ""
    complete = [f for f in folders if f.complete]
    if not complete:
        return [], "no complete run"
    return (complete if args.all else complete[:1]), ""


def human(verdicts: list[Verdict], full: bool) -> str:
    if not verdicts:
        return "no destinations configured: nothing to verify"
    checked = "sizes, sha256" if full else "sizes"
    headers = ("RESULT", "DESTINATION", "DATE", "FILES", "SIZE", "DETAIL")
    rows = [
        (
            "ok" if v.ok else "FAIL",
            v.destination,
            v.date or "-",
            "-" if v.files is None else str(v.files),
            _common.human_size(v.size),
            f"{checked} match the manifest" if v.ok else "; ".join(v.problems),
        )
        for v in verdicts
    ]
    return _common.table(headers, rows, right=(3, 4))
