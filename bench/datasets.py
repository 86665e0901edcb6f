"""Deterministic data sets, generated once into ``bench/work/data``.

The content is pseudo-random (incompressible) bytes from a seeded generator, so every machine
and every run uploads the same bytes, and no tool gains from compression or deduplication. A
stamp file records what was generated; a set is rebuilt only when its stamp does not match.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import attrs

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
CHUNK = 1 * MiB
FORMAT_VERSION = 1


@attrs.frozen
class DataSet:
    """``files`` files of ``file_size`` bytes spread over ``folders`` folders."""

    name: str
    files: int
    file_size: int
    folders: int = 1
    #: Only our tool runs it (the memory check), once.
    memory_check: bool = False
    #: The destinations it runs on (None: all). 20,000 objects would take the GCS emulator,
    #: which serves one request at a time, over half an hour per run.
    destinations: tuple[str, ...] | None = None
    #: It also gets a restore cell (``--phase restore``): backed up once, then restored by
    #: ``service-backup restore`` and downloaded by the peers (issue 13: the 1 GiB and the
    #: many-files sets, plus the quick sets for the smoke run).
    restore: bool = False
    #: Its upload cells also time ours with the sha256 switched off (``bench.unhashed``):
    #: issue 13 bounds hashing to 10 % of the 1 GiB cells' wall.
    hash_cost: bool = False

    def runs_on(self, destination: str) -> bool:
        return self.destinations is None or destination in self.destinations

    @property
    def total_bytes(self) -> int:
        return self.files * self.file_size

    @property
    def title(self) -> str:
        return f"{self.files:,} \u00d7 {_size_text(self.file_size)}"

    def relative_paths(self) -> list[str]:
        if self.folders <= 1:
            return [f"file-{i:05d}.bin" for i in range(self.files)]
        per_folder = -(-self.files // self.folders)
        return [f"dir-{i // per_folder:03d}/file-{i:05d}.bin" for i in range(self.files)]


def _size_text(size: int) -> str:
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


BIG = DataSet("big-1g", files=1, file_size=1 * GiB, restore=True, hash_cost=True)
MANY = DataSet("many-16k", files=5000, file_size=16 * KiB, folders=50, restore=True)
MEDIUM = DataSet("mid-1m", files=200, file_size=1 * MiB)
#: The per-file overhead set (issue 20): 20,000 x 4 KiB over 100 folders, 80 MiB in all.
MANY_4K = DataSet(
    "many-4k", files=20000, file_size=4 * KiB, folders=100, destinations=("local", "scp")
)
HUGE = DataSet("huge-2g", files=1, file_size=2 * GiB, memory_check=True)
#: ``--quick``: small sets only, a tenth of the many-files set and a quarter of the 1 MiB set,
#: so that all five destinations (the GCS emulator takes ~0.1 s per object) fit in 5 minutes.
MANY_QUICK = DataSet("many-16k-q", files=500, file_size=16 * KiB, folders=5, restore=True)
MEDIUM_QUICK = DataSet("mid-1m-q", files=50, file_size=1 * MiB, restore=True)

FULL_SETS = (BIG, MANY, MEDIUM, MANY_4K, HUGE)
QUICK_SETS = (MEDIUM_QUICK, MANY_QUICK)
ALL_SETS = {s.name: s for s in (*FULL_SETS, *QUICK_SETS)}


def _stamp(dataset: DataSet) -> str:
    return (
        f"v{FORMAT_VERSION} {dataset.name} {dataset.files} {dataset.file_size} {dataset.folders}\n"
    )


def ensure(dataset: DataSet, data_root: Path) -> Path:
    """The folder holding ``dataset``, generating it first if it is missing or stale."""
    folder = data_root / dataset.name
    stamp = data_root / f"{dataset.name}.stamp"
    if folder.is_dir() and stamp.is_file() and stamp.read_text() == _stamp(dataset):
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    stamp.unlink(missing_ok=True)
    partial = data_root / f"{dataset.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    for index, relative in enumerate(dataset.relative_paths()):
        path = partial / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{dataset.name}/{index}")
        with open(path, "wb") as out:
            left = dataset.file_size
            while left:
                n = min(CHUNK, left)
                out.write(rng.randbytes(n))
                left -= n
    partial.rename(folder)
    stamp.write_text(_stamp(dataset))
    return folder
