"""File names whose bytes are not UTF-8, as keys every destination can store.

A Linux file name is bytes; Python hands them out as ``str`` with each byte that is not part
of valid UTF-8 turned into a lone surrogate (``surrogateescape``). S3, Azure, GCS and SFTP
cannot encode those (``UnicodeEncodeError``), and neither can a log line or a JSON manifest.
So such a name is stored under one reversible, printable form, the same on every
destination, decided here once so that no plugin has to know:

* a name that is valid UTF-8 is used as it is, byte for byte (``per%25cent%.txt`` stays
  ``per%25cent%.txt``);
* in a name that is not, every byte that is not part of valid UTF-8 becomes ``%XX`` (two
  uppercase hex digits) and every literal ``%`` becomes ``%25``; everything else, ``/``
  included, stays as it is. ``b"caf\\xe9.txt"`` is stored as ``caf%E9.txt``.

The manifest marks such entries ``"escaped": true``: a literal name may contain ``%E9`` too,
so the flag (not the look of the name) is what tells ``restore`` to turn it back into bytes.
"""

from __future__ import annotations

import os
import re

_FIRST_ESCAPED = 0xDC80
_LAST_ESCAPED = 0xDCFF
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def needs_escaping(name: str) -> bool:
    """Whether ``name`` (as ``os`` functions return it) holds bytes that are not UTF-8.

    ASCII (nearly every name) is answered without looking at each character: this runs for
    every file of every run.
    """
    return not name.isascii() and any(_FIRST_ESCAPED <= ord(ch) <= _LAST_ESCAPED for ch in name)


def escape(name: str) -> tuple[str, bool]:
    """The stored form of ``name`` and whether it was escaped (see the module docstring).

    ``name`` is what ``os.scandir``/``os.walk`` return (``os.fsdecode`` of the bytes).
    """
    if not needs_escaping(name):
        return name, False
    return escape_bytes(os.fsencode(name)), True


def escape_bytes(raw: bytes) -> str:
    """The escaped form of ``raw``, whatever it holds (use ``escape`` for the decision)."""
    text = raw.decode("utf-8", "surrogateescape")
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if _FIRST_ESCAPED <= code <= _LAST_ESCAPED:
            out.append(f"%{code - 0xDC00:02X}")
        elif ch == "%":
            out.append("%25")
        else:
            out.append(ch)
    return "".join(out)


def printable(name: str) -> str:
    """``name`` fit for a log line or an error message: escaped when it is not UTF-8."""
    return escape(name)[0]


def unescape(stored: str) -> bytes:
    """The original bytes of an escaped name; ``ValueError`` if ``stored`` is not one.

    Only the exact form ``escape`` writes is accepted (uppercase ``%XX`` for bytes that are
    not UTF-8, ``%25`` for ``%``, nothing else escaped, and at least one byte that is not
    UTF-8), so a crafted manifest cannot smuggle ``%2F`` or ``%2E%2E`` past the path checks.
    """
    raw = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(stored):
        raw += stored[pos : match.start()].encode("utf-8")
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += stored[pos:].encode("utf-8")
    result = bytes(raw)
    try:
        result.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        raise ValueError(f"{stored!r} is marked escaped but names only UTF-8 bytes")
    if escape_bytes(result) != stored:
        raise ValueError(f"{stored!r} is not an escaped name (only %XX of non-UTF-8 bytes, %25)")
    return result


def local_name(stored: str, escaped: bool) -> str:
    """The name to create on this machine for a stored path (``os`` functions encode it)."""
    return os.fsdecode(unescape(stored)) if escaped else stored
