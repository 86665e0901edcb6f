"""The service-backup package on a service-backup_python package compiled for real.

Runs only under bosh/scripts/compile-check (``SERVICE_BACKUP_COMPILED_PYTHON`` names the compiled
package; compiling CPython is too slow for ``make test``), next to test_lifecycle.py, whose
fixtures then build the service-backup package on that interpreter. These tests add what the
compiled interpreter itself must prove: it lacks exactly the C modules the packaging script's
comment says (when compiled without the -dev packages the Jammy stemcell lacks), it has what the
daemon needs, and the packaged daemon validates the examples and backs up to a local folder and
to an S3 server, then verifies what it wrote by reading it back.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.s3.server import MotoServer, ServerError, moto_server
from tests.servers import unavailable

from .conftest import COMPILED_PYTHON_ENV, compiled_python
from .job import DEPLOYMENT, REPO
from .test_lifecycle import MISSING_ON_THE_STEMCELL

#: Set by compile-check when the -dev packages the stemcell lacks were hidden while compiling.
STEMCELL_LIKE_ENV = "SERVICE_BACKUP_COMPILED_STEMCELL_LIKE"

pytestmark = pytest.mark.skipif(
    not os.environ.get(COMPILED_PYTHON_ENV),
    reason=f"{COMPILED_PYTHON_ENV} is not set: run bosh/scripts/compile-check",
)

#: The stdlib's optional C modules: what CPython 3.11 builds when it finds their headers.
OPTIONAL_C_MODULES = (
    "_bz2", "_crypt", "_ctypes", "_curses", "_curses_panel", "_dbm", "_decimal", "_elementtree",
    "_gdbm", "_hashlib", "_json", "_lzma", "_multiprocessing", "_posixshmem", "_socket",
    "_sqlite3", "_ssl", "_tkinter", "_uuid", "_zoneinfo", "binascii", "fcntl", "mmap", "nis",
    "pyexpat", "readline", "resource", "select", "termios", "zlib",
)  # fmt: skip

#: Each module the daemon needs, exercised, not just imported.
NEEDED = """
import ctypes, hashlib, os, ssl, zlib, json, select, socket
assert ctypes.CDLL(None).getpid() == os.getpid(), "a ctypes call through libffi failed"
assert hashlib.sha256(b"abc").hexdigest().startswith("ba7816bf"), "sha256"
context = ssl.create_default_context()
assert context.cert_store_stats()["x509_ca"] > 0, "no CA certificate loaded from the OS store"
assert zlib.decompress(zlib.compress(b"x" * 1000)) == b"x" * 1000, "zlib"
print(ssl.OPENSSL_VERSION)
"""


def run(*command: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def python3() -> Path:
    compiled = compiled_python()
    assert compiled is not None
    return compiled / "bin" / "python3"


def test_the_compiled_interpreter_lacks_only_what_the_stemcell_cannot_build(
    python3: Path,
) -> None:
    probe = (
        "import importlib, json\n"
        "missing = []\n"
        f"for name in {OPTIONAL_C_MODULES!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        missing.append(name)\n"
        "print(json.dumps(missing))\n"
    )
    result = run(python3, "-c", probe)
    assert result.returncode == 0, result.stderr
    missing = set(json.loads(result.stdout))
    # Never more than the packaging script's comment (and docs/bosh.md) name.
    assert missing <= set(MISSING_ON_THE_STEMCELL), (
        f"missing beyond the documented list: {sorted(missing - set(MISSING_ON_THE_STEMCELL))}"
    )
    if os.environ.get(STEMCELL_LIKE_ENV) == "1":
        # Compiled without the stemcell's missing headers: the documented list is exact.
        assert missing == set(MISSING_ON_THE_STEMCELL), (
            f"documented as missing but built: {sorted(set(MISSING_ON_THE_STEMCELL) - missing)}"
        )


def test_the_compiled_interpreter_has_what_the_daemon_needs(python3: Path) -> None:
    result = run(python3, "-c", NEEDED)
    assert result.returncode == 0, result.stderr
    assert "OpenSSL" in result.stdout


def test_ctypes_links_the_vendored_libffi_statically(python3: Path) -> None:
    """The stemcell has no libffi-dev; the package must not depend on a libffi.so found on the
    compilation machine either."""
    result = run(python3, "-c", "import _ctypes; print(_ctypes.__file__)")
    assert result.returncode == 0, result.stderr
    linked = run("ldd", result.stdout.strip())
    assert linked.returncode == 0, linked.stderr
    assert "libffi" not in linked.stdout, f"_ctypes links a shared libffi:\n{linked.stdout}"


@pytest.mark.parametrize("example", ["backup.yml", "local.yml"])
def test_the_packaged_daemon_validates_the_examples(packaged: Path, example: str) -> None:
    result = run(packaged / "bin" / "service-backup", "validate", REPO / "examples" / example)
    assert result.returncode == 0, f"examples/{example}: {result.stdout}{result.stderr}"


def backup_config(tmp_path: Path, destination: dict[str, Any]) -> tuple[Path, dict[str, bytes]]:
    """A config with one destination and a source folder of two files (one of 3 MiB)."""
    source = tmp_path / "source"
    (source / "nested").mkdir(parents=True)
    files = {"dump.rdb": b"redis dump\n", "nested/big.bin": os.urandom(3 * 1024 * 1024)}
    for name, data in files.items():
        (source / name).write_bytes(data)
    config = tmp_path / "backup.yml"
    config.write_text(
        json.dumps(
            {
                "destinations": [destination],
                "source_folder": str(source),
                "source_executable": "",
                "cleanup_executable": "",
                "cron_schedule": "0 * * * *",
                "deployment_name": DEPLOYMENT,
                "add_deployment_name_to_backup_path": True,
            }
        )
    )
    return config, files


def backup_and_verify(packaged: Path, config: Path) -> None:
    """manual-backup, then ``verify --full``: every object read back and its sha256 compared."""
    backup = run(packaged / "bin" / "manual-backup", config)
    assert backup.returncode == 0, backup.stdout[-3000:] + backup.stderr[-3000:]
    assert "Upload backup completed successfully" in backup.stdout, backup.stdout[-3000:]
    verify = run(packaged / "bin" / "service-backup", "verify", "--full", config)
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-3000:]


def test_manual_backup_to_a_local_folder(packaged: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    config, files = backup_config(
        tmp_path, {"type": "local", "name": "nfs", "config": {"path": str(backups)}}
    )
    backup_and_verify(packaged, config)
    for name, data in files.items():
        stored = list(backups.glob(f"{DEPLOYMENT}/*/*/*/{name}"))
        assert [p.read_bytes() == data for p in stored] == [True], f"{name}: {stored}"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    try:
        with moto_server(tmp_path_factory.mktemp("moto"), auth=True) as server:
            yield server
    except ServerError as exc:
        unavailable(f"moto server: {exc}")


def test_manual_backup_to_s3(packaged: Path, tmp_path: Path, moto: MotoServer) -> None:
    admin = boto3.client("s3", **moto.boto3_kwargs())
    admin.create_bucket(Bucket="compiled-python")
    destination = {
        "type": "s3",
        "name": "moto",
        "config": {
            "bucket_name": "compiled-python",
            "bucket_path": "backups",
            "access_key_id": moto.access_key_id,
            "secret_access_key": moto.secret_access_key,
            "endpoint_url": moto.endpoint,
        },
    }
    config, files = backup_config(tmp_path, destination)
    backup_and_verify(packaged, config)
    listed = admin.list_objects_v2(Bucket="compiled-python", Prefix=f"backups/{DEPLOYMENT}/")
    keys = {obj["Key"] for obj in listed.get("Contents", [])}
    for name, data in files.items():
        key = next((k for k in keys if k.endswith(f"/{name}")), None)
        assert key is not None, f"{name} not uploaded: {sorted(keys)}"
        body = admin.get_object(Bucket="compiled-python", Key=key)["Body"].read()
        assert body == data, f"{key} differs from the source file"
