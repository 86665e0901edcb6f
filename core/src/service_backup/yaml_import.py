"""PyYAML, imported without the one regular expression that was 7-9 % of every start-up.

``yaml.reader.Reader.NON_PRINTABLE`` is compiled when PyYAML is imported: a class of every
printable code point, ``[^\\x09\\x0A\\x0D\\x20-\\x7E\\x85\\xA0-\\uD7FF\\uE000-\\uFFFD...]``.
CPython's ``re`` compiler builds such a class one code point at a time, in Python: 57M
instructions (callgrind), about 15 ms, for every ``manual-backup`` and ``restore``. The same set
written as what it excludes (``NON_PRINTABLE`` below) compiles in 4.5M.

``re.compile`` looks a pattern up in ``re``'s own cache before compiling it. Before PyYAML is
imported, the equivalent pattern is put there under PyYAML's text, so the reader gets it
instead of compiling its own; it only ever calls ``.search`` on it. ``re._cache`` is private,
so this is confined here and done only where it was tested (CPython 3.11, PyYAML 6.0):
elsewhere, or if PyYAML's text ever changes, PyYAML compiles its own pattern as before, which
is slower but the same. ``tests/core/test_yaml_import.py`` proves the two patterns match the
same code points (every one of them) and fails loudly when the shortcut stops applying.
"""

from __future__ import annotations

import re
import sys

#: ``yaml.reader.Reader.NON_PRINTABLE``'s text in PyYAML 6.0.
PYYAML_NON_PRINTABLE = "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
#: The same code points: the complement of the above within U+0000..U+10FFFF.
NON_PRINTABLE = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]"


def applies() -> bool:
    """Whether ``re`` is the one this was tested with (its cache a dict keyed like 3.11's)."""
    return (
        sys.implementation.name == "cpython"
        and sys.version_info[:2] == (3, 11)
        and isinstance(getattr(re, "_cache", None), dict)
    )


if "yaml" not in sys.modules and applies():
    re._cache[(str, PYYAML_NON_PRINTABLE, 0)] = re.compile(NON_PRINTABLE)  # type: ignore[attr-defined]

import yaml as yaml  # noqa: E402  (after the cache entry it uses)

__all__ = ["yaml"]
