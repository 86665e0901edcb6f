"""A string that never shows itself.

Keys, passwords and service-account JSON travel through the config as ``Secret`` so that a
``repr`` of a config object, a log line built from one, or an error quoting a field cannot leak
them by accident. The only way to the value is ``reveal()``, which makes every use greppable.
"""

from __future__ import annotations

from typing import Any, Final

REDACTED: Final = "<redacted>"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("secrets are not pickled")


def secret_field_values(obj: object) -> list[str]:
    """Every revealed secret inside an attrs config object (for scrubbing error text).

    Mappings are searched too: plugin-declared sections live in ``BackupConfig.sections``.
    """
    from collections.abc import Mapping

    import attrs

    found: list[str] = []
    if isinstance(obj, Secret):
        if obj.reveal():
            found.append(obj.reveal())
    elif attrs.has(type(obj)):
        for field in attrs.fields(type(obj)):  # type: ignore[arg-type]
            found.extend(secret_field_values(getattr(obj, field.name)))
    elif isinstance(obj, Mapping):
        for item in obj.values():
            found.extend(secret_field_values(item))
    elif isinstance(obj, list | tuple):
        for item in obj:
            found.extend(secret_field_values(item))
    return found


def scrub(text: str, secrets: list[str]) -> str:
    """Replace any secret (and its lines, for multi-line keys) appearing in ``text``."""
    for value in sorted(set(secrets), key=len, reverse=True):
        if not value:
            continue
        text = text.replace(value, REDACTED)
        for line in value.splitlines():
            line = line.strip()
            if len(line) >= 8:
                text = text.replace(line, REDACTED)
    return text
