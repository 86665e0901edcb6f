"""``DestinationSuite``: the tests, shaped after restic's backend tests and rclone's fstests.

Each test talks to the live destination the plugin's ``destination_config`` fixture points at.
Most go through the same code a backup run uses (``run_backup`` and the default upload hook),
so a plugin that passes here behaves in production as it did in its tests.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, ClassVar

import attrs
import pytest
from loguru import logger

from ..catalog import dated_prefixes, read_manifest, run_folders
from ..commit import STAGING_FOLDER
from ..config import BackupConfig, parse_config, structure_destination_config
from ..destination import Destination, DestinationContext, DestinationType, ObjectInfo
from ..errors import BackupError, ConfigError, ObjectNotFound, SourceError
from ..manifest import MANIFEST_NAME, Manifest, manifest_key
from ..plugins import DESTINATION_GROUP, PluginRegistry, load_registry
from ..processes import ProcessManager
from ..results import RunResult, StoredFile
from ..run import run_backup
from ..secret import Secret, secret_field_values
from ..source import Source, SourceFile
from ..upload import upload_one
from .memory import rss_peak
from .secrets import leaked, secret_pieces

MiB = 1024 * 1024

#: Names that break naive quoting, URL encoding or shell use; each must be stored literally.
AWKWARD_NAMES: tuple[str, ...] = (
    "with space.txt",
    "ünïcödé-日本語.txt",
    "hash#tag.txt",
    "question?mark.txt",
    "per%25cent%.txt",
    "plus+sign.txt",
    "-leading-dash.txt",
    "$(touch service-backup-pwned)",
    "; rm -rf pwned-marker",
    "quote'single.txt",
    'quote"double.txt',
    "back`tick`.txt",
    "amp&pipe|lt<gt>.txt",
)
DESTINATION_NAME = "conformance-target"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_stream(stream: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(MiB):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _write_random_file(path: Path, size: int, seed: int = 7) -> None:
    """Incompressible, deterministic content, written in chunks (no big buffer in memory)."""
    block = hashlib.sha256(str(seed).encode()).digest()
    chunk = (block * (MiB // len(block) + 1))[:MiB]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        remaining, counter = size, 0
        while remaining:
            counter += 1
            piece = hashlib.sha256(counter.to_bytes(8, "big")).digest() + chunk[32:]
            f.write(piece[: min(remaining, len(piece))])
            remaining -= min(remaining, len(piece))


@attrs.define
class CapturedLogs:
    lines: list[str] = attrs.Factory(list)

    def text(self) -> str:
        return "\n".join(self.lines)


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    """A source tree: relative path -> content."""
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)


class _AllLogs:
    """Every loguru record and every stdlib logging record at INFO and above, as text."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._handler = logging.Handler(logging.INFO)
        self._handler.emit = lambda record: self.lines.append(  # type: ignore[method-assign]
            f"{record.name}: {record.getMessage()}"
        )
        self._sink_id: int | None = None
        self._root_level = logging.WARNING

    def __enter__(self) -> _AllLogs:
        self._sink_id = logger.add(
            lambda m: self.lines.append(str(m)), format="{message} {extra}", level=0
        )
        root = logging.getLogger()
        self._root_level = root.level
        root.setLevel(min(root.level or logging.WARNING, logging.INFO))
        root.addHandler(self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self._handler)
        root.setLevel(self._root_level)
        if self._sink_id is not None:
            logger.remove(self._sink_id)

    def text(self) -> str:
        return "\n".join(self.lines)


def _secret_values(dtype: DestinationType, raw: dict[str, Any]) -> list[str]:
    try:
        return secret_field_values(structure_destination_config(raw, dtype.config_class))
    except ConfigError:
        return []


class DestinationSuite:
    """Subclass in a test module, set ``destination_type``, provide ``destination_config``."""

    #: The entry-point name / ``type:`` of the destination under test.
    destination_type: ClassVar[str] = ""
    #: A file above the plugin's multipart/chunk threshold.
    large_file_size: ClassVar[int] = 80 * MiB
    #: Peak RSS growth allowed while writing the large file; must be below half its size so a
    #: destination that reads the whole file into memory cannot pass.
    max_rss_growth: ClassVar[int] = 32 * MiB
    #: Objects written by the listing test: more than one page of the backend's listing API.
    listing_entries: ClassVar[int] = 1001
    #: When set, ``destination.list_page_size`` is set to it first (cheap paging on slow servers).
    listing_page_size: ClassVar[int | None] = None
    #: A run against an unreachable endpoint must fail within this many seconds.
    unreachable_within: ClassVar[float] = 60.0
    #: Size of the source that fails part-way in the "nothing presented as complete" test.
    failing_upload_size: ClassVar[int] = 12 * MiB
    #: The plugin's chunk / part / single-request threshold, if it has one: files of chunk-1,
    #: chunk, chunk+1 and 2*chunk+1 bytes are round-tripped (rclone's ChunkedUpload sizes).
    chunk_size: ClassVar[int | None] = None

    # ----------------------------------------------------------------- plugin-supplied fixtures
    @pytest.fixture
    def destination_config(self) -> Iterator[dict[str, Any]]:
        """Yield the ``config:`` mapping of a fresh location that does not exist yet."""
        raise NotImplementedError("define a destination_config fixture in your suite subclass")

    @pytest.fixture
    def wrong_credentials_config(self, destination_config: dict[str, Any]) -> dict[str, Any] | None:
        """The same location with credentials the server refuses; None skips that test.

        The suite creates the location with ``destination_config`` first (restic's Create),
        then opens it with these credentials (restic's Open): a wrong key must fail against a
        location that exists, not only against one that does not.
        """
        return None

    @pytest.fixture
    def unreachable_config(self, destination_config: dict[str, Any]) -> dict[str, Any] | None:
        """The same config pointed at an endpoint nothing listens on; None skips that test."""
        return None

    @pytest.fixture
    def promote_config(self, destination_config: dict[str, Any]) -> dict[str, Any]:
        """The config the promotion (``rename``) tests run with.

        They run only where the destination opened with it says ``can_rename``; a plugin
        that promotes only when the operator opts in (the object stores' ``promote_by_copy``)
        returns ``{**destination_config, "promote_by_copy": True}`` here.
        """
        return destination_config

    # ------------------------------------------------------------------------------- helpers
    def make_registry(self) -> PluginRegistry:
        """How the suite finds the plugin: through its entry point, as the daemon does."""
        return load_registry(hook_plugins=False)

    @pytest.fixture
    def registry(self) -> PluginRegistry:
        return self.make_registry()

    @pytest.fixture
    def dtype(self, registry: PluginRegistry) -> DestinationType:
        return registry.destination_type(self.destination_type)

    def open_destination(
        self, dtype: DestinationType, raw: dict[str, Any], name: str = DESTINATION_NAME
    ) -> Destination:
        config = structure_destination_config(raw, dtype.config_class)
        return dtype.factory(config, DestinationContext(name))

    @pytest.fixture
    def destination(
        self, dtype: DestinationType, destination_config: dict[str, Any]
    ) -> Iterator[Destination]:
        with self.open_destination(dtype, destination_config) as dest:
            dest.ensure_location()
            yield dest

    @pytest.fixture
    def promoting(
        self, dtype: DestinationType, promote_config: dict[str, Any]
    ) -> Iterator[Destination]:
        """The destination opened with ``promote_config``; skips where it cannot rename."""
        with self.open_destination(dtype, promote_config) as dest:
            if not dest.can_rename:
                pytest.skip(
                    f"{self.destination_type}: can_rename is False with promote_config, so "
                    "same-day re-runs are never staged and promoted (rename is never called)"
                )
            dest.ensure_location()
            yield dest

    @pytest.fixture
    def logs(self) -> Iterator[CapturedLogs]:
        captured = CapturedLogs()
        sink_id = logger.add(lambda m: captured.lines.append(str(m)), format="{message} {extra}")
        yield captured
        logger.remove(sink_id)

    @pytest.fixture(autouse=True)
    def _no_secret_is_ever_logged(
        self, request: pytest.FixtureRequest, dtype: DestinationType
    ) -> Iterator[None]:
        """Around every test: whatever the plugin (or its SDK) logs must carry no secret.

        Successful writes, listings, reads, ``describe()`` and failures alike: a plugin that
        logs its password on every successful upload leaks it to the job's log files.
        """
        captured = _AllLogs()
        with captured:
            yield
        configs = [
            request.node.funcargs.get(name)
            for name in (
                "destination_config",
                "wrong_credentials_config",
                "unreachable_config",
                "promote_config",
            )
        ]
        pieces = [
            piece
            for raw in configs
            if isinstance(raw, dict)
            for value in _secret_values(dtype, raw)
            for piece in secret_pieces(value)
        ]
        found = leaked(pieces, captured.text())
        assert found is None, (
            f"a secret of the destination's config appears in what was logged during the test "
            f"(a piece of it: {found[:3]}...): log only names and reasons, never credentials"
        )

    def backup_config(
        self, registry: PluginRegistry, raw: dict[str, Any], source: Path, **extra: Any
    ) -> BackupConfig:
        return parse_config(
            {
                "destinations": [
                    {"type": self.destination_type, "name": DESTINATION_NAME, "config": raw}
                ],
                "source_folder": str(source),
                "cron_schedule": "@daily",
                **extra,
            },
            registry,
        )

    def run(self, registry: PluginRegistry, config: BackupConfig) -> RunResult:
        return run_backup(config, registry, ProcessManager())

    @staticmethod
    def run_keys(destination: Destination, result_prefix: str) -> dict[str, ObjectInfo]:
        return {o.key.removeprefix(result_prefix): o for o in destination.list(result_prefix)}

    @staticmethod
    def secrets_of(dtype: DestinationType, raw: dict[str, Any]) -> list[str]:
        values = secret_field_values(structure_destination_config(raw, dtype.config_class))
        return [v for v in values if len(v) >= 4]

    # ------------------------------------------------------------------------- registration
    def test_entry_point_resolves(self, dtype: DestinationType) -> None:
        names = {ep.name for ep in importlib.metadata.entry_points(group=DESTINATION_GROUP)}
        assert self.destination_type in names, (
            f"no entry point '{self.destination_type}' in group '{DESTINATION_GROUP}'"
        )
        assert dtype.name == self.destination_type
        assert attrs.has(dtype.config_class), "the config class must be an attrs class"
        assert dtype.label, "the label names the destination in log lines"

    def test_config_validates(
        self, dtype: DestinationType, destination_config: dict[str, Any]
    ) -> None:
        config = structure_destination_config(destination_config, dtype.config_class)
        assert isinstance(config, dtype.config_class)
        with pytest.raises(ConfigError, match="no_such_option"):
            structure_destination_config(
                {**destination_config, "no_such_option": 1}, dtype.config_class
            )

    def test_missing_required_field_is_named(
        self, registry: PluginRegistry, dtype: DestinationType, destination_config: dict[str, Any]
    ) -> None:
        required = [
            f.name for f in attrs.fields(dtype.config_class) if f.metadata.get(
                "service_backup_required")
        ]  # fmt: skip
        assert required, "a destination with no required field cannot be told where to write"
        for name in required:
            raw = {k: v for k, v in destination_config.items() if k != name}
            for broken in (raw, {**raw, name: ""}):
                with pytest.raises(ConfigError) as info:
                    parse_config(
                        {
                            "destinations": [{"type": self.destination_type, "config": broken}],
                            "source_folder": "/tmp",
                            "cron_schedule": "@daily",
                        },
                        registry,
                    )
                assert f"destinations[0].config.{name}" in str(info.value)

    def test_secrets_absent_from_repr_and_errors(
        self, dtype: DestinationType, destination_config: dict[str, Any]
    ) -> None:
        secret_fields = [
            f.name for f in attrs.fields(dtype.config_class) if f.type in (Secret, "Secret")
        ]
        config = structure_destination_config(destination_config, dtype.config_class)
        secrets = secret_field_values(config)
        text = repr(config) + str(config)
        for value in secrets:
            assert value not in text
        for name in secret_fields:  # a wrong type in a secret field must not echo it back
            if isinstance(destination_config.get(name), str) and destination_config[name]:
                with pytest.raises(ConfigError) as info:
                    structure_destination_config(
                        {**destination_config, name: [destination_config[name]]},
                        dtype.config_class,
                    )
                assert destination_config[name] not in str(info.value)

    # ------------------------------------------------------------------------ the location
    def test_location_is_created_and_idempotent(
        self, dtype: DestinationType, destination_config: dict[str, Any]
    ) -> None:
        with self.open_destination(dtype, destination_config) as dest:
            dest.ensure_location()
            dest.ensure_location()  # an existing location is fine
            info = dest.write("probe/created.txt", Source.from_bytes(b"created"))
            assert info.size == 7
            assert [o.key for o in dest.list("probe/")] == ["probe/created.txt"]

    # --------------------------------------------------------------------------- round trips
    @pytest.mark.parametrize("size", [0, 1, 4096 + 17])
    def test_write_read_back_identical(self, destination: Destination, size: int) -> None:
        data = os.urandom(size)
        key = f"roundtrip/file-{size}.bin"
        info = destination.write(key, Source.from_bytes(data))
        assert info.key == key
        assert info.size == size
        assert destination.stat(key).size == size
        with destination.open_read(key) as stream:
            assert stream.read() == data
        assert [o.key for o in destination.list("roundtrip/")] == [key]

    def test_large_file_streams_with_bounded_memory(
        self, destination: Destination, tmp_path: Path
    ) -> None:
        assert self.max_rss_growth < self.large_file_size / 2, (
            "max_rss_growth must stay below half of large_file_size, or slurping would pass"
        )
        source = tmp_path / "large.bin"
        _write_random_file(source, self.large_file_size)
        expected = _sha256_file(source)
        file = SourceFile(path=source, relative="large.bin", size=self.large_file_size)
        with rss_peak() as peak:
            upload_one(destination, "large/large.bin", file)
        assert destination.stat("large/large.bin").size == self.large_file_size
        with destination.open_read("large/large.bin") as stream:
            digest, size = _sha256_stream(stream)
        assert size == self.large_file_size
        assert digest == expected, "the large file read back differs from what was written"
        assert peak.growth <= self.max_rss_growth, (
            f"RSS grew by {peak.growth / MiB:.1f} MiB while uploading a "
            f"{self.large_file_size / MiB:.0f} MiB file (allowed {self.max_rss_growth / MiB:.0f})"
        )

    def test_run_uploads_tree_with_awkward_names(
        self,
        registry: PluginRegistry,
        destination: Destination,
        destination_config: dict[str, Any],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.chdir(tmp_path)
        source = tmp_path / "source"
        expected: dict[str, bytes] = {"empty.dat": b"", "top.txt": b"top\n"}
        for index, name in enumerate(AWKWARD_NAMES):
            expected[f"nested/deeper/{name}"] = f"{index}:{name}".encode()
            expected[f"{name[:6].strip() or 'x'}-dir/{name}"] = name.encode()[::-1]
        _write_tree(source, expected)
        config = self.backup_config(
            registry, destination_config, source,
            deployment_name="conformance-deploy", add_deployment_name_to_backup_path=True,
        )  # fmt: skip
        result = self.run(registry, config)
        assert result.ok, result.error
        stamp = time.strftime("%Y/%m/%d")
        prefix = f"conformance-deploy/{stamp}/"
        stored = self.run_keys(destination, prefix)
        assert stored.pop(MANIFEST_NAME, None) is not None, "the run wrote no manifest"
        assert sorted(stored) == sorted(expected)
        for relative, data in expected.items():
            assert stored[relative].size == len(data)
            with destination.open_read(prefix + relative) as stream:
                assert stream.read() == data, relative
        assert not list(tmp_path.glob("service-backup-pwned*")), "a file name was executed"
        assert result.uploads[0].size_in_bytes == sum(len(d) for d in expected.values())

    @pytest.mark.parametrize("around", ["chunk-1", "chunk", "chunk+1", "2*chunk+1"])
    def test_sizes_around_the_chunk_size(
        self, destination: Destination, tmp_path: Path, around: str
    ) -> None:
        if self.chunk_size is None:
            pytest.skip("the plugin declares no chunk_size")
        chunk = self.chunk_size
        size = {"chunk-1": chunk - 1, "chunk": chunk, "chunk+1": chunk + 1}.get(
            around, 2 * chunk + 1
        )
        path = tmp_path / "chunked.bin"
        _write_random_file(path, size, seed=size)
        stat = path.stat()
        file = SourceFile(path=path, relative="chunked.bin", size=size, mtime_ns=stat.st_mtime_ns)
        stored = upload_one(destination, f"chunks/{around}.bin", file)
        expected = _sha256_file(path)
        assert stored.sha256 == expected, f"{around}: the hash the run records is not the file's"
        assert destination.stat(f"chunks/{around}.bin").size == size, f"{around}: stored size"
        with destination.open_read(f"chunks/{around}.bin") as stream:
            digest, got = _sha256_stream(stream)
        assert (got, digest) == (size, expected), (
            f"{around} ({size} bytes): the object read back differs from the file written "
            f"({got} bytes read): a chunk boundary loses or repeats bytes"
        )

    @pytest.mark.parametrize("fault", ["ends-early", "grows"])
    def test_failed_write_keeps_the_stored_object(
        self, destination: Destination, tmp_path: Path, fault: str
    ) -> None:
        key = "keep/dump.rdb"
        good = b"the good copy of yesterday's dump\n" * 100
        destination.write(key, Source.from_bytes(good))
        size = self.failing_upload_size
        path = tmp_path / "dump.rdb"
        _write_random_file(path, size * 3 // 4 if fault == "ends-early" else size + MiB)
        source = Source(str(path), size, path=path)  # listed at ``size``
        try:
            with pytest.raises(SourceError, match=r"dump\.rdb"):
                destination.write(key, source)
        finally:
            source.close()
        with destination.open_read(key) as stream:
            assert stream.read() == good, (
                f"a write whose source {fault.replace('-', ' ')} replaced the object already "
                "stored under its key: commit only after the source's last read succeeded"
            )
        assert [o.key for o in destination.list("keep/")] == [key], "a partial object is listed"

    def test_listing_spans_pages_and_respects_prefix(self, destination: Destination) -> None:
        if self.listing_page_size is not None:
            destination.list_page_size = self.listing_page_size  # type: ignore[attr-defined]
        keys = [f"paged/{i:05d}.txt" for i in range(self.listing_entries)]
        outside = ["pagedx/outside.txt", "other/paged/not-here.txt"]

        def put(key: str) -> None:
            destination.write(key, Source.from_bytes(key.encode()))

        with ThreadPoolExecutor(max_workers=max(1, destination.file_concurrency)) as pool:
            list(pool.map(put, keys + outside))
        listed = [o.key for o in destination.list("paged/")]
        assert len(listed) == len(set(listed)), "the listing repeated entries across pages"
        assert sorted(listed) == keys
        assert {o.size for o in destination.list("paged/")} == {len(keys[0])}
        names = list(destination.list_keys("paged/"))
        assert sorted(names) == keys, (
            "list_keys('paged/') does not report exactly the keys list('paged/') does"
        )

    def test_overwrite_by_second_run(
        self,
        registry: PluginRegistry,
        destination: Destination,
        destination_config: dict[str, Any],
        tmp_path: Path,
    ) -> None:
        source = tmp_path / "source"
        source.mkdir()
        (source / "dump.rdb").write_bytes(b"first run, longer content" * 10)
        config = self.backup_config(registry, destination_config, source)
        assert self.run(registry, config).ok
        (source / "dump.rdb").write_bytes(b"second")
        result = self.run(registry, config)
        assert result.ok, result.error
        key = f"{time.strftime('%Y/%m/%d')}/dump.rdb"
        assert destination.stat(key).size == len(b"second")
        with destination.open_read(key) as stream:
            assert stream.read() == b"second"

    def test_delete_and_missing_keys(self, destination: Destination) -> None:
        destination.write("del/a.txt", Source.from_bytes(b"a"))
        destination.write("del/b.txt", Source.from_bytes(b"b"))
        destination.delete("del/a.txt")
        assert [o.key for o in destination.list("del/")] == ["del/b.txt"]
        with pytest.raises(ObjectNotFound):
            destination.stat("del/a.txt")
        with pytest.raises(ObjectNotFound):
            destination.open_read("del/a.txt")
        with pytest.raises(ObjectNotFound):
            destination.delete("del/a.txt")

    # -------------------------------------------------------------------------- failure modes
    def test_wrong_credentials_fail_clearly_without_secrets(
        self,
        registry: PluginRegistry,
        dtype: DestinationType,
        destination_config: dict[str, Any],
        wrong_credentials_config: dict[str, Any] | None,
        tmp_path: Path,
        logs: CapturedLogs,
    ) -> None:
        if wrong_credentials_config is None:
            pytest.skip("the plugin supplies no wrong_credentials_config")
        secrets = self.secrets_of(dtype, wrong_credentials_config) + self.secrets_of(
            dtype, destination_config
        )
        with self.open_destination(dtype, destination_config) as existing:  # restic's Create
            existing.ensure_location()
            existing.write("denied/existing.txt", Source.from_bytes(b"already here"))
        # The plugin's own error, before the core scrubs anything, must already be clean.
        with (
            pytest.raises(BackupError) as raised,
            self.open_destination(dtype, wrong_credentials_config) as dest,
        ):
            dest.ensure_location()
            dest.write("denied/f.txt", Source.from_bytes(b"data"))
        raw = str(raised.value)
        assert "\n" not in raw.strip() and "Traceback" not in raw
        for secret in secrets:
            assert secret not in raw, "the destination's error quotes a secret"
        source = tmp_path / "source"
        source.mkdir()
        (source / "f.txt").write_text("data")
        result = self.run(registry, self.backup_config(registry, wrong_credentials_config, source))
        assert not result.ok
        assert result.error and DESTINATION_NAME in result.error
        assert "Traceback" not in logs.text()
        assert "\n" not in result.error
        for secret in secrets:
            assert secret not in result.error
            assert secret not in logs.text()

    def test_unreachable_endpoint_fails_in_bounded_time(
        self,
        registry: PluginRegistry,
        unreachable_config: dict[str, Any] | None,
        tmp_path: Path,
    ) -> None:
        if unreachable_config is None:
            pytest.skip("the plugin supplies no unreachable_config")
        source = tmp_path / "source"
        source.mkdir()
        (source / "f.txt").write_text("data")
        config = self.backup_config(registry, unreachable_config, source)
        outcome: list[RunResult] = []
        worker = threading.Thread(target=lambda: outcome.append(self.run(registry, config)))
        started = time.monotonic()
        worker.daemon = True
        worker.start()
        worker.join(self.unreachable_within)
        elapsed = time.monotonic() - started
        assert outcome, f"the run was still going after {elapsed:.0f}s against a dead endpoint"
        assert not outcome[0].ok
        assert outcome[0].error and DESTINATION_NAME in outcome[0].error

    def test_source_file_removed_mid_run(self, destination: Destination, tmp_path: Path) -> None:
        path = tmp_path / "gone.dat"
        path.write_bytes(b"soon gone")
        file = SourceFile(path=path, relative="gone.dat", size=9)
        path.unlink()  # listed, then removed before its upload started
        with pytest.raises(SourceError, match=r"gone\.dat"):
            upload_one(destination, "vanish/gone.dat", file)
        assert list(destination.list("vanish/")) == []

    def test_failed_upload_is_not_presented_as_complete(
        self, destination: Destination, tmp_path: Path
    ) -> None:
        size = self.failing_upload_size
        path = tmp_path / "short.bin"
        _write_random_file(path, size * 3 // 4)
        source = Source(str(path), size, path=path)  # listed at ``size``, shorter on disk
        try:
            with pytest.raises(SourceError, match=r"short\.bin"):
                destination.write("partial/broken.bin", source)
        finally:
            source.close()
        with pytest.raises(ObjectNotFound):
            destination.stat("partial/broken.bin")
        assert [o.key for o in destination.list("partial/")] == [], (
            "a write whose source ended early left an object behind"
        )

    # ---------------------------------------------------------- promotion of staged re-runs
    # A same-day re-run on a ``can_rename`` destination stages its files and promotes them
    # with ``rename`` once all arrived (``commit.py``): the earlier complete run is safe only
    # if every move replaces its target whole and removes its source.
    def _stage(self, destination: Destination, tmp_path: Path, staging: str) -> dict[str, str]:
        """Stage a few awkward objects (and one above ``chunk_size``); relative path -> sha256."""
        small = {
            "dump.rdb": os.urandom(3000),
            "empty.dat": b"",
            "sub dir/nested/deep.aof": b"SET k v\n" * 50,
            f"awk/{AWKWARD_NAMES[1]}": b"unicode",
            f"awk/{AWKWARD_NAMES[4]}": b"percent",
            f"awk/{AWKWARD_NAMES[7]}": b"shell",
        }
        digests = {}
        for relative, data in small.items():
            destination.write(f"{staging}/{relative}", Source.from_bytes(data, relative))
            digests[relative] = hashlib.sha256(data).hexdigest()
        if self.chunk_size is not None:
            path = tmp_path / "above-chunk.bin"
            _write_random_file(path, self.chunk_size + 1, seed=3)
            file = SourceFile(path=path, relative="above-chunk.bin", size=self.chunk_size + 1)
            digests["above-chunk.bin"] = upload_one(destination, f"{staging}/big.bin", file).sha256
        return {("big.bin" if r == "above-chunk.bin" else r): d for r, d in digests.items()}

    def test_rename_promotes_staged_objects(self, promoting: Destination, tmp_path: Path) -> None:
        staging = f"{STAGING_FOLDER}/{uuid.uuid4()}"
        final = "promoted/2026/11/30"
        digests = self._stage(promoting, tmp_path, staging)
        promoting.rename([(f"{staging}/{r}", f"{final}/{r}") for r in digests])
        for relative, expected in digests.items():
            with promoting.open_read(f"{final}/{relative}") as stream:
                digest, _ = _sha256_stream(stream)
            assert digest == expected, f"{relative}: the promoted object differs from the staged"
            with pytest.raises(ObjectNotFound):
                promoting.stat(f"{staging}/{relative}")
                pytest.fail(f"{relative}: the staged object is still there after its rename")
        listed = sorted(o.key.removeprefix(f"{final}/") for o in promoting.list(f"{final}/"))
        assert listed == sorted(digests), "the promoted folder does not list exactly the moves"
        left = [o.key for o in promoting.list(f"{STAGING_FOLDER}/")]
        assert left == [], f"rename left staged objects behind: {left[:3]}"

    def test_rename_replaces_an_existing_object(self, promoting: Destination) -> None:
        staged, final = f"{STAGING_FOLDER}/{uuid.uuid4()}/dump.rdb", "replace/2026/11/30/dump.rdb"
        promoting.write(final, Source.from_bytes(b"the earlier run's longer dump\n" * 40))
        promoting.write(staged, Source.from_bytes(b"re-run"))
        promoting.rename([(staged, final)])
        assert promoting.stat(final).size == len(b"re-run"), "the earlier object was kept"
        with promoting.open_read(final) as stream:
            assert stream.read() == b"re-run", "rename did not replace the object under its key"
        assert [o.key for o in promoting.list("replace/")] == [final]

    def test_rename_of_a_missing_source_raises_object_not_found(
        self, promoting: Destination
    ) -> None:
        staged = f"{STAGING_FOLDER}/{uuid.uuid4()}/never-staged.rdb"
        final = "missing/2026/11/30/never-staged.rdb"
        with pytest.raises(ObjectNotFound):
            promoting.rename([(staged, final)])
            pytest.fail("rename of a key that is not stored returned without an error")
        assert list(promoting.list("missing/")) == [], "rename of a missing source stored something"

    def test_same_day_rerun_is_staged_and_promoted(
        self,
        registry: PluginRegistry,
        dtype: DestinationType,
        promoting: Destination,
        promote_config: dict[str, Any],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        source = tmp_path / "source"
        first = {"dump.rdb": b"first run, longer\n" * 300, "sub dir/x y.aof": b"SET a 1\n"}
        second = {"dump.rdb": os.urandom(5000), "sub dir/x y.aof": b"", "new.txt": b"new\n"}
        _write_tree(source, first)
        config = self.backup_config(
            registry, promote_config, source,
            deployment_name="conformance-deploy", add_deployment_name_to_backup_path=True,
        )  # fmt: skip
        one = self.run(registry, config)
        assert one.ok, one.error
        assert [f.state for f in run_folders(promoting, "conformance-deploy")] == ["complete"]
        moves: list[tuple[str, str]] = []
        cls = type(promoting)
        original = cls.rename

        def spy(self: Destination, pairs: Any) -> None:
            pairs = list(pairs)
            moves.extend(pairs)
            original(self, pairs)

        monkeypatch.setattr(cls, "rename", spy)
        _write_tree(source, second)
        two = self.run(registry, config)
        assert two.ok, two.error
        staged = f"conformance-deploy/{STAGING_FOLDER}/{two.backup_guid}/"
        prefix = f"conformance-deploy/{time.strftime('%Y/%m/%d')}/"
        assert sorted(moves) == sorted((staged + p, prefix + p) for p in second), (
            "the same-day re-run was not staged and promoted with one rename of its files"
        )
        with self.open_destination(dtype, promote_config) as later:
            (folder,) = run_folders(later, "conformance-deploy")
            assert folder.complete, "the promoted re-run left no manifest"
            assert folder.manifest is not None and folder.manifest.backup_guid == two.backup_guid
            expected = {p: (len(d), hashlib.sha256(d).hexdigest()) for p, d in second.items()}
            assert {f.path: (f.size, f.sha256) for f in folder.manifest.files} == expected
            for entry in folder.manifest.files:
                with later.open_read(prefix + entry.path) as stream:
                    digest, size = _sha256_stream(stream)
                assert (size, digest) == (entry.size, entry.sha256), (
                    f"{entry.path}: the promoted object is not the re-run's bytes"
                )
            left = [o.key for o in later.list(f"conformance-deploy/{STAGING_FOLDER}/")]
            assert left == [], f"the promoted re-run left staged objects: {left[:3]}"

    # ------------------------------------------------------ manifests, list, verify, restore
    # ``list``, ``verify``, ``restore``, ``status`` and retention use only ``list``,
    # ``open_read`` and ``stat``: these tests are what a plugin must do for them to work.
    def test_manifest_round_trip_through_a_new_instance(
        self, dtype: DestinationType, destination: Destination, destination_config: dict[str, Any]
    ) -> None:
        manifest = Manifest(
            backup_guid="0b8a3c1e-5a8e-4c57-9a55-3f6f2f1f0c11",
            identifier="instance-ü",
            deployment_name="conformance-deploy",
            hostname="vm-0",
            started_at="2026-11-30T01:00:00.000000Z",
            finished_at="2026-11-30T01:00:05.000000Z",
            source_folder="/var/vcap/store/backups",
            version="1.0.0",
            files=(StoredFile("dump rdb/ünï.rdb", 3, hashlib.sha256(b"abc").hexdigest()),),
        )
        prefix = "conformance-deploy/2026/11/30"
        data = manifest.to_json()
        info = destination.write(manifest_key(prefix), Source.from_bytes(data, "manifest"))
        assert info.size == len(data)
        destination.write(f"{prefix}/dump rdb/ünï.rdb", Source.from_bytes(b"abc"))
        with self.open_destination(dtype, destination_config) as later:
            assert read_manifest(later, prefix) == manifest, "the manifest read back differs"
            (folder,) = run_folders(later, "conformance-deploy")
            assert folder.complete and folder.manifest == manifest
            assert [o.key for o in folder.objects] == [f"{prefix}/dump rdb/ünï.rdb"]
            assert later.stat(f"{prefix}/dump rdb/ünï.rdb").size == 3

    def test_list_under_a_dated_prefix(self, destination: Destination) -> None:
        inside = ["d/2026/11/30/a.txt", "d/2026/11/30/sub dir/b.txt", "d/2026/11/30/.dot"]
        outside = ["d/2026/11/300/c.txt", "d/2026/11/3/e.txt", "d/2026/11/30x", "dx/2026/11/30/f"]
        for key in inside + outside:
            destination.write(key, Source.from_bytes(key.encode()))
        listed = sorted(o.key for o in destination.list("d/2026/11/30/"))
        assert listed == sorted(inside), "the listing of a dated folder is wrong"
        assert sorted(destination.list_keys("d/2026/11/30/")) == listed, (
            "list_keys of a dated folder differs from list: restore would choose runs by it"
        )
        folders = run_folders(destination, "d")
        assert [(f.date.isoformat(), f.state) for f in folders] == [("2026-11-30", "incomplete")]
        assert sorted(o.key for o in folders[0].objects) == sorted(inside)
        named = [f.date.isoformat() for f in dated_prefixes(destination, "d")]
        assert named == ["2026-11-30"], f"restore would see these runs: {named}"
        for prefix, expected in [
            ("d/", ["2026"]),
            ("d/2026/11/", ["3", "30", "300"]),
            ("d/2026/11/30/", ["sub dir"]),
            ("d/2026/11/30/sub dir/", []),
        ]:
            found = list(destination.list_folders(prefix))
            assert sorted(found) == expected, (
                f"list_folders({prefix!r}) gave {found}, the folders of its keys are {expected}"
            )

    def test_run_manifest_matches_what_reads_back(
        self,
        registry: PluginRegistry,
        dtype: DestinationType,
        destination: Destination,
        destination_config: dict[str, Any],
        tmp_path: Path,
    ) -> None:
        source = tmp_path / "source"
        files = {"dump.rdb": os.urandom(70_000), "empty.dat": b"", ".aof/x y.aof": b"SET k v\n"}
        _write_tree(source, files)
        config = self.backup_config(
            registry, destination_config, source,
            deployment_name="conformance-deploy", add_deployment_name_to_backup_path=True,
        )  # fmt: skip
        result = self.run(registry, config)
        assert result.ok, result.error
        with self.open_destination(dtype, destination_config) as later:
            folders = run_folders(later, "conformance-deploy")
            assert [f.state for f in folders] == ["complete"], "the run left no manifest"
            manifest = folders[0].manifest
            assert manifest is not None and manifest.backup_guid == result.backup_guid
            expected = {p: (len(d), hashlib.sha256(d).hexdigest()) for p, d in files.items()}
            assert {f.path: (f.size, f.sha256) for f in manifest.files} == expected
            for entry in manifest.files:
                with later.open_read(f"{folders[0].prefix}/{entry.path}") as stream:
                    digest, size = _sha256_stream(stream)
                assert (size, digest) == (entry.size, entry.sha256), entry.path


__all__ = ["AWKWARD_NAMES", "DestinationSuite", "MiB"]
