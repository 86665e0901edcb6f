"""``manual-backup`` with the run manifest's sha256 switched off: what hashing costs, measured.

Issue 13 bounds what the manifest's sha256 may cost: at most 10 % of the wall time of the
1 GiB cells. The only honest way to know is to time the very same backup without it, so the
1 GiB upload cells also run this build (the row "manual-backup, sha256 off", a baseline, not a
peer): the same process, config, plugins and bytes moved, but nothing computes a sha256 of the
files, and a local copy does not read its bytes back for one. Ours' wall minus this one's is
what hashing costs. What it writes is no backup: the manifest records zeros for every sha256,
so ``restore`` and ``verify`` would reject every file. It runs only in the bench's scratch
locations, which are removed after timing.

It switches two names of ``service_backup`` that are not public API: ``source.hashlib`` (every
sha256 the ``Source`` computes as a destination reads) and ``kernel_copy._RangeHasher`` (the
read-back and hash beside a local kernel copy). ``tests/bench/test_unhashed.py`` fails as soon
as either moves or a backup through this build still hashes.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from service_backup import kernel_copy, source

#: What every sha256 of a file reads as in a manifest written by this build.
ZEROS = "0" * 64


class NoSha256:
    """Takes bytes and computes nothing; answers zeros."""

    name = "sha256"
    digest_size = 32
    block_size = 64

    def __init__(self, data: Any = b"") -> None:
        pass

    def update(self, data: Any) -> None:
        pass

    def digest(self) -> bytes:
        return bytes(self.digest_size)

    def hexdigest(self) -> str:
        return ZEROS

    def copy(self) -> NoSha256:
        return self


class NoReadBack:
    """``kernel_copy._RangeHasher`` that neither reads the copied bytes back nor hashes them."""

    def __init__(self, fd: int, *, background: bool) -> None:
        pass

    def advance(self, limit: int) -> None:
        pass

    def finish(self) -> str:
        return ZEROS

    def close(self) -> None:
        pass


def switch_off() -> None:
    """From now on this process's backups hash nothing (``source`` sees only ``sha256``)."""
    source.hashlib = types.SimpleNamespace(sha256=NoSha256)  # type: ignore[assignment]
    kernel_copy._RangeHasher = NoReadBack  # type: ignore[misc, assignment]


def main() -> int:
    switch_off()
    from service_backup.cli import manual_backup

    return manual_backup()


if __name__ == "__main__":
    sys.exit(main())
