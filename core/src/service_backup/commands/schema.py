"""``service-backup schema [--json]``: the config file's shape, read from the config classes.

The BOSH job checks a manifest on the director, before any VM changes, with this schema (it
is embedded in ``bosh/jobs/service-backup/templates/backup.yml.erb``; a test fails when the
two drift). Generating it from the attrs classes the daemon itself builds keeps one source of
truth: what the director checks is what ``validate`` checks, minus the checks only code can do
(cron syntax, key formats, port ranges), which ``pre-start`` still runs.

A node of the schema describes one value::

    {"kind": "string" | "secret" | "integer" | "boolean" | "enum" | "list" | "map"
             | "object" | "any",
     "required": true,         # object fields: must be present (no default)
     "not_empty": true,        # required(): present and not blank
     "choices": [...],         # enum
     "minimum": 0,             # integer: the field's validator rejects smaller values
     "items": {...},           # list, map
     "fields": {name: {...}}}  # object; any other key is unknown

The value rules mirror the core's cattrs hooks: a ``string`` also takes a number (YAML's
``bucket_path: 2024``), a ``secret`` only a string, an ``integer`` a whole number or its
digits, a ``boolean`` true/false or the words. Destination types are the built-in ones
(``BUILT_IN``: a third-party type is checked by ``pre-start`` only, and one installed beside
the workspace must not change the committed schema); top-level sections come from the
installed hook plugins.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from ..secret import Secret

# The CLI imports every command module to build its parser: the config model (and with it the
# scheduler) and the plugin loader are imported when the schema is built, not for every run.
if TYPE_CHECKING:
    from ..plugins import PluginRegistry

HELP = "print the config file's schema (--json: the form the BOSH job's template embeds)"
FORMAT: Final = 1
#: The distributions whose destination types the director checks (this release's own).
BUILT_IN: Final = frozenset(
    {"service-backup-plugins", "service-backup-s3", "service-backup-azure",
     "service-backup-gcs", "service-backup-scp"}
)  # fmt: skip
#: Integers a field's validator is probed with to find its lower bound.
_PROBES: Final = (-1, 0, 1)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    schema = build_schema()
    if args.json:
        sys.stdout.write(render_json(schema))
    else:
        for line in describe(schema):
            print(line)
    return 0


def render_json(schema: Mapping[str, Any]) -> str:
    """Stable text (sorted keys, fixed indent): the committed copy is compared byte for byte."""
    return json.dumps(schema, indent=1, sort_keys=True) + "\n"


def build_schema(registry: PluginRegistry | None = None) -> dict[str, Any]:
    """The whole config file: top-level keys, destination entries, each installed type."""
    from ..config import _ALERT_FIELDS, _RawConfig, _RawDestination
    from ..plugins import DESTINATION_GROUP, _dist_of, _entry_points, load_registry

    registry = registry or load_registry()
    top = _object_node(_RawConfig)
    for key, config_class in sorted(registry.config_sections().items()):
        top["fields"][key] = _object_node(config_class)
    destination = _object_node(_RawDestination)
    # parse_config: a blank type is "required field missing"; config is checked per type.
    destination["fields"]["type"]["not_empty"] = True
    destination["fields"]["config"] = {"kind": "map", "items": {"kind": "any"}}
    types: dict[str, Any] = {}
    for ep in _entry_points(DESTINATION_GROUP):
        if _dist_of(ep)[0] not in BUILT_IN:
            continue
        dtype = registry.destination_type(ep.name)
        types[dtype.name] = {
            "distribution": _dist_of(ep)[0],
            "config": _object_node(dtype.config_class),
        }
    alert_fields = [
        f"config.{section}.{name}" for section, names in _ALERT_FIELDS.items() for name in names
    ]
    return {
        "format": FORMAT,
        "generated_by": "service-backup schema --json",
        "config": top,
        "destination": destination,
        "destination_types": types,
        "rules": {
            # parse_config's cross-field rules, by name.
            "required_with_destinations": ["source_folder", "cron_schedule"],
            "alerts_required_with_product_name": alert_fields,
            "unique_destination_names": True,
        },
    }


def _object_node(cls: type) -> dict[str, Any]:
    from ..config import REQUIRED

    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for field in attrs.fields(cls):
        node = _node(hints[field.name])
        if field.default is attrs.NOTHING:
            node["required"] = True
        if field.metadata.get(REQUIRED):
            node["required"] = node["not_empty"] = True
        if node["kind"] == "integer" and field.validator is not None:
            minimum = _minimum(field)
            if minimum is not None:
                node["minimum"] = minimum
        fields[field.name] = node
    return {"kind": "object", "fields": fields}


def _node(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or (origin is not None and type(None) in args):
        others = [a for a in args if a is not type(None)]
        if len(others) == 1:  # ``X | None``: a null is dropped by the loader, as if absent
            return _node(others[0])
        return {"kind": "any"}
    if origin is typing.Literal:
        return {"kind": "enum", "choices": list(args)}
    if origin in (list, tuple) or (origin is not None and _is_sequence(origin)):
        return {"kind": "list", "items": _node(args[0]) if args else {"kind": "any"}}
    if origin in (dict, Mapping) or (origin is not None and _is_mapping(origin)):
        return {"kind": "map", "items": _node(args[1]) if len(args) == 2 else {"kind": "any"}}
    if hint is Secret:
        return {"kind": "secret"}
    if hint is bool:
        return {"kind": "boolean"}
    if hint is int:
        return {"kind": "integer"}
    if hint is str:
        return {"kind": "string"}
    if isinstance(hint, type) and attrs.has(hint):
        return _object_node(hint)
    return {"kind": "any"}


def _is_sequence(origin: Any) -> bool:
    import collections.abc

    return isinstance(origin, type) and issubclass(origin, collections.abc.Sequence)


def _is_mapping(origin: Any) -> bool:
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _minimum(field: attrs.Attribute[Any]) -> int | None:
    """The smallest probe the field's validator accepts, when it rejects -1 (``must be 0 or
    more``, ``above 0``); None when it accepts -1 or cannot be called without an instance."""
    validator = field.validator
    assert validator is not None
    verdicts = []
    for value in _PROBES:
        try:
            validator(None, field, value)
        except (ValueError, TypeError):
            verdicts.append(False)
        except Exception:
            return None
        else:
            verdicts.append(True)
    if verdicts[0] or True not in verdicts:
        return None
    return _PROBES[verdicts.index(True)]


def describe(schema: Mapping[str, Any]) -> list[str]:
    """One line per field path, for people: ``destinations[].config.bucket_name (s3) ...``."""
    lines: list[str] = []
    _describe(schema["config"], "", lines)
    _describe(schema["destination"], "destinations[]", lines)
    for name, entry in schema["destination_types"].items():
        lines.append(f"destinations[].config when type is {name} ({entry['distribution']}):")
        _describe(entry["config"], "  config", lines)
    return lines


def _describe(node: Mapping[str, Any], path: str, lines: list[str]) -> None:
    kind = node["kind"]
    if kind == "object" and path:
        lines.append(f"{path}  mapping")
    if kind == "object":
        for name, child in node["fields"].items():
            if name == "destinations" and not path:
                lines.append("destinations  list of destination entries (below)")
                continue
            _describe(child, f"{path}.{name}" if path else name, lines)
        return
    if kind == "list" and node["items"]["kind"] == "object":
        lines.append(f"{path}  list")
        _describe(node["items"], f"{path}[]", lines)
        return
    text = {"enum": "one of " + ", ".join(map(str, node.get("choices", [])))}.get(kind, kind)
    if kind == "list":
        text = "list of " + node["items"]["kind"]
        if "choices" in node["items"]:
            text += " (" + ", ".join(map(str, node["items"]["choices"])) + ")"
    notes = [text]
    if node.get("not_empty"):
        notes.append("required")
    elif node.get("required"):
        notes.append("required (may be empty)")
    if "minimum" in node:
        notes.append(f">= {node['minimum']}")
    lines.append(f"{path}  {', '.join(notes)}")
