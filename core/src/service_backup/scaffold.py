"""``service-backup new-plugin NAME``: a destination package that passes the suite as generated.

The generated destination stores objects in a folder (``root`` in its config), the simplest
store there is, so that the author starts from green: the entry point, the registration, the
config class with a secret, the ``Destination`` methods with their failure rules and the
conformance test are all in place, and replacing the folder calls with the real store's API is
the only job left. The layout is the one every built-in destination package has.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def names(name: str) -> tuple[str, str, str]:
    """(type name, distribution, import package) for ``name``; ConfigError if unusable."""
    if not _NAME.match(name):
        raise ConfigError(
            f"plugin name '{name}' must be lowercase letters, digits and '_', starting with a "
            "letter (it becomes the type: in configs and a Python package name)"
        )
    return name, f"service-backup-{name.replace('_', '-')}", f"service_backup_{name}"


def generate(name: str, folder: Path) -> Path:
    """Write the package under ``folder/<distribution>``; refuse to overwrite anything."""
    type_name, distribution, package = names(name)
    root = folder / distribution
    if root.exists():
        raise ConfigError(f"{root} already exists: choose another --dir or remove it")
    values = {
        "TYPE": type_name,
        "DIST": distribution,
        "PKG": package,
        "CLASS": "".join(part.capitalize() for part in type_name.split("_")),
    }
    for relative, template in _FILES.items():
        path = root / relative.format(**values)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = template
        for key, value in values.items():
            text = text.replace(f"@{key}@", value)
        path.write_text(text)
    return root


_PYPROJECT = """[project]
name = "@DIST@"
version = "0.1.0"
description = "The @TYPE@ destination for service-backup."
requires-python = ">=3.11"
dependencies = ["service-backup>=0.1"]

[project.optional-dependencies]
test = ["pytest>=8", "service-backup-plugins"]

# The entry point's name is the `type:` operators write in their config.
[project.entry-points.service_backup]
@TYPE@ = "@PKG@"

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["src/@PKG@"]
"""

_INIT = '''"""The ``@TYPE@`` destination for service-backup: registration only.

The SDK (here: nothing but the standard library) is imported by ``destination.py`` when a run
opens a destination, never when a config is validated.
"""

from __future__ import annotations

from service_backup.destination import DestinationType, lazy_factory
from service_backup.hookspecs import hookimpl

from .config import @CLASS@Config

__all__ = ["@CLASS@Config", "destination_types"]


@hookimpl
def destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            "@TYPE@",
            @CLASS@Config,
            lazy_factory("@PKG@.destination:@CLASS@Destination"),
            label="@CLASS@",
        )
    ]
'''

_CONFIG = '''"""The ``config:`` of a ``@TYPE@`` destination, validated before the first run."""

from __future__ import annotations

import attrs

from service_backup.config import NO_SECRET, required
from service_backup.secret import Secret


@attrs.frozen
class @CLASS@Config:
    #: Where objects go. Replace with your store's address (bucket, URL ...).
    root: str = required()
    #: An example credential: typed ``Secret``, it never appears in logs, errors or repr.
    token: Secret = NO_SECRET
'''

_DESTINATION = '''"""The ``@TYPE@`` destination: files under ``root`` (your store goes here).

Rules every destination keeps (the conformance suite checks them):
- read the source only through the core's ``Source`` (it checks length and hashes);
- commit under the final key only after the last read succeeded: a failed write never
  replaces what is stored under the key (temporary name, then rename);
- errors are ``DestinationError`` with one line naming the object, never a credential;
- ``list`` returns every object under a prefix; ``ObjectNotFound`` for absent keys.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from service_backup.destination import Destination, DestinationContext, ObjectInfo
from service_backup.errors import DestinationError, ObjectNotFound
from service_backup.layout import MiB, check_key
from service_backup.source import Source

from .config import @CLASS@Config

_PARTIAL = ".partial-"


class @CLASS@Destination(Destination):
    file_concurrency = 4

    def __init__(self, config: @CLASS@Config, context: DestinationContext) -> None:
        self.root = Path(config.root)
        self.name = context.display_name

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def describe(self, prefix: str) -> str:
        return str(self.root / prefix)

    def ensure_location(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestinationError(f"cannot create {self.root}: {exc.strerror}") from None

    def write(self, key: str, source: Source) -> ObjectInfo:
        final = self._path(key)
        partial = final.with_name(f"{_PARTIAL}{uuid.uuid4().hex}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with source.open() as stream, open(partial, "wb") as out:
                shutil.copyfileobj(stream, out, MiB)
            os.replace(partial, final)
        except OSError as exc:
            raise DestinationError(f"cannot write {final}: {exc.strerror or exc}") from None
        finally:
            partial.unlink(missing_ok=True)
        return self.stat(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for path in sorted(self.root.rglob("*")) if self.root.is_dir() else ():
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.name.startswith(_PARTIAL) and key.startswith(prefix):
                yield ObjectInfo(key=key, size=path.stat().st_size)

    def open_read(self, key: str) -> IO[bytes]:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.root}") from None

    def stat(self, key: str) -> ObjectInfo:
        try:
            return ObjectInfo(key=key, size=self._path(key).stat().st_size)
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.root}") from None

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            raise ObjectNotFound(f"{key} not found in {self.root}") from None
'''

_TEST = '''"""The shared conformance suite against this destination (a real store in your tests)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service_backup.testing import DestinationSuite, MiB


class Test@CLASS@Conformance(DestinationSuite):
    destination_type = "@TYPE@"
    large_file_size = 64 * MiB
    max_rss_growth = 24 * MiB
    listing_entries = 50
    chunk_size = MiB  # your store's part / chunk size, if it has one

    @pytest.fixture
    def destination_config(self, tmp_path: Path) -> Iterator[dict[str, Any]]:
        """A fresh location that does not exist yet (the suite creates it)."""
        yield {"root": str(tmp_path / f"store-{uuid.uuid4().hex}"), "token": "example-token-1234"}
'''

_README = """# @DIST@

The `@TYPE@` destination for service-backup, generated by `service-backup new-plugin @TYPE@`.

```sh
uv pip install -e ".[test]"     # into the environment that has service-backup
python -m pytest tests          # the shared conformance suite, green as generated
```

Then replace the folder calls in `src/@PKG@/destination.py` with your store's API, keep
`tests/test_conformance.py` pointed at a real server of that store, and keep it green.
Operators use it as `type: @TYPE@` in a destination entry.
"""

_FILES = {
    "pyproject.toml": _PYPROJECT,
    "README.md": _README,
    "src/{PKG}/__init__.py": _INIT,
    "src/{PKG}/config.py": _CONFIG,
    "src/{PKG}/destination.py": _DESTINATION,
    "src/{PKG}/py.typed": "",
    "tests/test_conformance.py": _TEST,
}
