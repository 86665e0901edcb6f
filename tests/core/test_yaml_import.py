"""``service_backup.yaml_import``: PyYAML gets an equivalent, cheaper NON_PRINTABLE pattern.

The shortcut uses ``re``'s private cache; these tests prove the replacement matches exactly the
same code points as PyYAML's own pattern, that PyYAML's reader still refuses what it refused,
and fail loudly when a PyYAML or Python upgrade makes the shortcut stop applying.
"""

from __future__ import annotations

import re
import subprocess
import sys

from service_backup import yaml_import
from service_backup.yaml_import import yaml


def test_the_cheap_pattern_matches_exactly_the_code_points_pyyamls_does() -> None:
    every = "".join(map(chr, range(0x110000)))
    # Wrapped in a group: a different text, so ``re`` compiles PyYAML's class for real
    # instead of returning the cached replacement.
    theirs = re.compile(f"(?:{yaml_import.PYYAML_NON_PRINTABLE})")
    ours = re.compile(yaml_import.NON_PRINTABLE)
    expected = [m.start() for m in theirs.finditer(every)]
    found = [m.start() for m in ours.finditer(every)]
    assert len(expected) == 2111, f"PyYAML's pattern matched only {len(expected)} code points"
    assert found == expected, (
        f"the replacement matches {len(found)} code points, PyYAML's {len(expected)}; "
        f"first difference at {next(a for a, b in zip(found, expected, strict=False) if a != b)}"
    )


def test_pyyaml_imported_through_the_core_uses_the_cheap_pattern() -> None:
    """In a fresh process (here PyYAML may already be imported): the shortcut applies."""
    code = (
        "import service_backup.config, yaml.reader; from service_backup import yaml_import;"
        "print(yaml.reader.Reader.NON_PRINTABLE.pattern == yaml_import.NON_PRINTABLE)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert yaml_import.applies(), (
        f"yaml_import's shortcut was tested on CPython 3.11 only, this is {sys.version}: check "
        "re's cache and PyYAML's NON_PRINTABLE, then widen yaml_import.applies()"
    )
    assert proc.stdout.strip() == "True", (
        "PyYAML compiled its own NON_PRINTABLE: its text changed (yaml/reader.py) or re's "
        "cache did; update yaml_import.PYYAML_NON_PRINTABLE, or drop the shortcut"
    )


def test_the_pure_python_reader_still_refuses_a_control_character_where_it_did() -> None:
    """The reader checks a whole string at once when given one (the C loader has its own)."""
    try:
        yaml.load("key: ok\nother: a\x07b\n", Loader=yaml.SafeLoader)
    except yaml.reader.ReaderError as exc:
        assert (exc.position, exc.character) == (16, 7), (
            f"the reader reported position {exc.position}, character {exc.character}; "
            "expected position 16, character 7 (BEL)"
        )
    else:
        raise AssertionError("the pure-Python reader accepted a BEL character")
