"""The files a run uploads: everything under ``source_folder``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import attrs

from .errors import SourceError


@attrs.frozen
class SourceFile:
    """A regular file to upload: where it is, its key below the run prefix, its size when seen."""

    path: Path
    relative: str
    size: int


def scan_source(folder: str | Path) -> list[SourceFile]:
    """Every regular file under ``folder``, sorted by relative path.

    Symlinks to files are followed (their content is what the operator means to keep);
    symlinked directories are not descended (no loops). A folder that cannot be listed fails
    the run with its name rather than silently shrinking the backup.
    """
    root = Path(folder)
    try:
        if not root.is_dir():
            raise SourceError(f"source_folder {root} does not exist or is not a directory")
    except PermissionError:
        raise SourceError(f"source_folder {root} cannot be read: permission denied") from None

    found: list[SourceFile] = []

    def fail(exc: OSError) -> None:
        raise SourceError(
            f"cannot list {exc.filename or root}: {exc.strerror or exc}".rstrip()
        ) from None

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # vanished between listing and stat: not part of this backup
            except OSError as exc:
                raise SourceError(f"cannot read source file {path}: {exc.strerror}") from None
            if not stat.S_ISREG(st.st_mode):
                continue
            relative = path.relative_to(root).as_posix()
            found.append(SourceFile(path=path, relative=relative, size=st.st_size))
    return found
