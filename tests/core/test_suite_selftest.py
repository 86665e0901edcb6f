"""The conformance suite catches broken plugins (a suite that cannot fail proves nothing)."""

from __future__ import annotations

import pytest

PLUGIN_AND_SUITE = """
import shutil
import uuid
from typing import IO

import attrs
import pytest
from loguru import logger

from service_backup.config import required
from service_backup.destination import DestinationType, ObjectInfo
from service_backup.errors import DestinationError, ObjectNotFound
from service_backup.plugins import PluginRegistry, load_registry
from service_backup.hookspecs import hookimpl
from service_backup.secret import Secret
from service_backup.source import Source
from service_backup.testing import DestinationSuite, MiB
from service_backup_plugins.local.destination import LocalDestination


@attrs.frozen
class BrokenConfig:
    path: str = required()
    token: Secret = required()


class Broken(LocalDestination):
    def __init__(self, config, context):
        super().__init__(config, context)
        self.token = config.token

    def ensure_location(self):
        if self.token.reveal() != "right-token-123":
            if "{flaw}" == "leaks-secret":
                logger.info(f"login with {{self.token.reveal()}} refused")
            raise DestinationError("login refused")
        super().ensure_location()

    def write(self, key, source):
        if "{flaw}" == "leaks-on-success":
            logger.debug(f"writing {{key}} with token {{self.token.reveal()}}")
        if "{flaw}" == "off-by-one" and source.size == 2 * MiB + 1:
            with source.open() as stream:
                data = stream.read()
            return super().write(key, Source.from_bytes(data[:-1] + b"?"))
        if "{flaw}" == "replaces" and key.startswith("keep/"):
            final = self._path(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            with source.open() as stream, open(final, "wb") as out:
                while chunk := stream.read(MiB):
                    out.write(chunk)
            return self.stat(key)
        if "{flaw}" == "truncates" and source.size > MiB:
            with source.open() as stream:
                data = stream.read(source.size - 1)
            return super().write(key, Source.from_bytes(data))
        if "{flaw}" == "slurps":
            return super().write(key, Source.from_bytes(source.read_all()))
        return super().write(key, source)

    @property
    def can_rename(self):
        return "{flaw}" != "no-rename"

    def rename(self, moves):
        if "{flaw}" == "rename-leaves-staged":  # copies, never removes the staged object
            for old, new in moves:
                if not self._path(old).exists():
                    raise ObjectNotFound(f"{{old}} not found")
                self._path(new).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self._path(old), self._path(new))
            return
        if "{flaw}" == "rename-ignores-missing":  # skips a missing source without a word
            moves = [(old, new) for old, new in moves if self._path(old).exists()]
        super().rename(moves)


class Plugin:
    @staticmethod
    @hookimpl
    def destination_types():
        return [DestinationType("broken", BrokenConfig, Broken, label="broken")]


class TestBroken(DestinationSuite):
    destination_type = "broken"
    large_file_size = 64 * MiB
    max_rss_growth = 24 * MiB
    listing_entries = 20
    chunk_size = MiB
    failing_upload_size = 2 * MiB

    def make_registry(self):
        registry = load_registry(hook_plugins=False)
        registry.register(Plugin(), name="broken")
        return registry

    @pytest.fixture
    def destination_config(self, tmp_path):
        yield {{"path": str(tmp_path / uuid.uuid4().hex), "token": "right-token-123"}}

    @pytest.fixture
    def wrong_credentials_config(self, destination_config):
        return {{**destination_config, "token": "wrong-token-456"}}
"""

SELECTED = (
    "test_large_file_streams_with_bounded_memory or "
    "test_wrong_credentials_fail_clearly_without_secrets or test_write_read_back_identical or "
    "test_sizes_around_the_chunk_size or test_failed_write_keeps_the_stored_object"
)
RENAME_TESTS = (
    "test_rename_promotes_staged_objects",
    "test_rename_replaces_an_existing_object",
    "test_rename_of_a_missing_source_raises_object_not_found",
    "test_same_day_rerun_is_staged_and_promoted",
)


def run_suite(pytester: pytest.Pytester, flaw: str, selected: str = SELECTED) -> pytest.RunResult:
    pytester.makepyfile(test_broken=PLUGIN_AND_SUITE.format(flaw=flaw))
    return pytester.runpytest_subprocess("-k", selected, "-p", "no:cacheprovider", "-rfEs")


def test_a_sound_plugin_passes(pytester: pytest.Pytester) -> None:
    run_suite(pytester, "none").assert_outcomes(passed=11)


def test_a_sound_renaming_plugin_passes_the_promotion_tests(pytester: pytest.Pytester) -> None:
    run_suite(pytester, "none", " or ".join(RENAME_TESTS)).assert_outcomes(passed=4)


def test_the_promotion_tests_skip_where_the_destination_cannot_rename(
    pytester: pytest.Pytester,
) -> None:
    result = run_suite(pytester, "no-rename", " or ".join(RENAME_TESTS))
    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(["SKIPPED*can_rename is False with promote_config*"])


@pytest.mark.parametrize(
    ("flaw", "failing_test"),
    [
        ("truncates", "test_large_file_streams_with_bounded_memory"),
        ("slurps", "test_large_file_streams_with_bounded_memory"),
        ("leaks-secret", "test_wrong_credentials_fail_clearly_without_secrets"),
        ("leaks-on-success", "test_write_read_back_identical"),
        ("off-by-one", "test_sizes_around_the_chunk_size*2*chunk+1"),
        ("replaces", "test_failed_write_keeps_the_stored_object"),
    ],
)
def test_a_broken_plugin_fails_the_suite(
    pytester: pytest.Pytester, flaw: str, failing_test: str
) -> None:
    result = run_suite(pytester, flaw)
    assert result.ret != 0, f"the suite passed a plugin that {flaw}"
    result.stdout.fnmatch_lines([f"[FE]*{failing_test}*"])  # a FAILED or ERROR summary line


@pytest.mark.parametrize(
    ("flaw", "failing_tests"),
    [
        # The staged objects left behind: the direct test, and the re-run through the pipeline
        # (which must leave nothing under .service-backup-staging/), both catch it.
        (
            "rename-leaves-staged",
            ("test_rename_promotes_staged_objects", "test_same_day_rerun_is_staged_and_promoted"),
        ),
        ("rename-ignores-missing", ("test_rename_of_a_missing_source_raises_object_not_found",)),
    ],
)
def test_a_broken_rename_fails_exactly_its_promotion_test(
    pytester: pytest.Pytester, flaw: str, failing_tests: tuple[str, ...]
) -> None:
    result = run_suite(pytester, flaw, " or ".join(RENAME_TESTS))
    result.assert_outcomes(passed=len(RENAME_TESTS) - len(failing_tests), failed=len(failing_tests))
    result.stdout.fnmatch_lines([f"FAILED*{name}*" for name in failing_tests], consecutive=False)
