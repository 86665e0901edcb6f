"""The configuration file: the BOSH job's rendered ``service-backup`` property.

attrs classes describe it, cattrs builds them at the edge (``load_config``). Destination
``config:`` mappings are built with the class their plugin registers, so every type validates
its own fields while errors still carry the full path (``destinations[1].config.bucket_name``).
Every error ends with ``missing_properties_message``; no value of a secret field ever appears.
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn
from cattrs.v import format_exception

from .cron import Schedule, ScheduleError, parse_schedule
from .errors import ConfigError
from .retention import RetentionPolicy
from .secret import Secret, register_secrets, secret_field_values
from .yaml_import import yaml

if TYPE_CHECKING:
    from .destination import DestinationType


class PluginLookup(Protocol):
    """What validation needs from the plugin layer: the config never imports the loader.

    ``PluginRegistry`` is one; a test may pass any object with these two methods.
    """

    def destination_type(self, name: str) -> DestinationType:
        """The registered type ``name``; ``ConfigError`` naming the installed ones if none."""
        ...

    def config_sections(self) -> dict[str, type]:
        """Top-level keys declared by plugins, with the attrs class that reads each."""
        ...


DEFAULT_MISSING_PROPERTIES_MESSAGE: Final = "Provide these missing fields in your manifest."
REQUIRED: Final = "service_backup_required"
NO_SECRET: Final = Secret("")


class InvalidConfig(ConfigError):
    """Every problem of a config at once; ``schedule_error`` is ``cron_schedule``'s, if any.

    The daemon and ``backup`` log an invalid schedule as ``Error scheduling job`` (the seed's
    message) besides the whole list.
    """

    def __init__(self, message: str, schedule_error: str | None = None) -> None:
        super().__init__(message)
        self.schedule_error = schedule_error


def required(**kwargs: Any) -> Any:
    """An attrs field that must be present and non-empty (the Go template's required keys)."""
    return attrs.field(metadata={REQUIRED: True}, **kwargs)


@attrs.frozen
class CloudControllerConfig:
    url: str = ""
    user: str = ""
    password: Secret = NO_SECRET


@attrs.frozen
class NotificationsConfig:
    service_url: str = ""
    cf_org: str = ""
    cf_space: str = ""
    reply_to: str = ""
    client_id: str = ""
    client_secret: Secret = NO_SECRET
    # The seed's manifest template indents these two under ``notifications``; accept them there.
    timeout_seconds: int | None = None
    skip_ssl_validation: bool | None = None


@attrs.frozen
class AlertsSettings:
    cloud_controller: CloudControllerConfig = CloudControllerConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    timeout_seconds: int = 60
    skip_ssl_validation: bool = False

    @property
    def effective_timeout_seconds(self) -> int:
        if self.notifications.timeout_seconds is not None:
            return self.notifications.timeout_seconds
        return self.timeout_seconds

    @property
    def effective_skip_ssl_validation(self) -> bool:
        if self.notifications.skip_ssl_validation is not None:
            return self.notifications.skip_ssl_validation
        return self.skip_ssl_validation


@attrs.frozen
class AlertsConfig:
    product_name: str = ""
    config: AlertsSettings = AlertsSettings()


def split_host_port(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) → ``(host, port)``; ValueError saying what is wrong.

    The host is required: the metrics endpoint binds to exactly the address given, so an
    operator opting in to ``0.0.0.0`` has to write it.
    """
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"'{text}' is not host:port (e.g. 127.0.0.1:9756)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"'{text}' is not host:port; write an IPv6 address as [::1]:9756")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"'{text}' is not host:port with a port from 1 to 65535")
    return host, int(port)


def _check_listen(_obj: Any, _attribute: Any, value: str) -> None:
    if value.strip():
        try:
            split_host_port(value)
        except ValueError as exc:
            raise ValueError(f"listen: {exc}") from None


@attrs.frozen
class MetricsConfig:
    """``metrics``: where Prometheus finds the numbers (DESIGN Part 2, "Observability").

    ``textfile`` is rewritten after every run for node_exporter's textfile collector (it reads
    only ``*.prom`` files); ``listen`` (``host:port``) makes the daemon serve ``/metrics`` there.
    Both optional: absent means not exported.
    """

    textfile: str = ""
    listen: str = attrs.field(default="", validator=_check_listen)

    @property
    def address(self) -> tuple[str, int] | None:
        return split_host_port(self.listen) if self.listen.strip() else None


@attrs.frozen
class DestinationSpec:
    """One entry of ``destinations``: its type, optional name and the plugin's config object."""

    type: str
    config: Any
    name: str = ""
    index: int = 0
    retention: RetentionPolicy | None = None

    @property
    def display_name(self) -> str:
        return self.name or f"{self.type}[{self.index}]"


@attrs.frozen
class ConfigSection:
    """A top-level config key a plugin declares through the ``config_sections`` hook."""

    key: str
    config_class: type


@attrs.frozen
class BackupConfig:
    """The whole config. Its fields are the document's keys: ``_RawConfig`` is derived from them."""

    destinations: tuple[DestinationSpec, ...] = ()
    source_folder: str = ""
    source_executable: str = ""
    cron_schedule: str = ""
    cleanup_executable: str = ""
    missing_properties_message: str = DEFAULT_MISSING_PROPERTIES_MESSAGE
    exit_if_in_progress: bool = False
    service_identifier_executable: str = ""
    deployment_name: str = ""
    add_deployment_name_to_backup_path: bool = False
    backup_user: str = "vcap"
    alerts: AlertsConfig | None = None
    metrics: MetricsConfig | None = None
    # Rendered by the Go release's job, no longer used: accepted and ignored.
    aws_cli_path: str = ""
    azure_cli_path: str = ""
    #: Plugin-declared top-level sections (``config_sections`` hook), by key.
    sections: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    #: ``cron_schedule`` parsed once at load (None when empty): every command validates it.
    schedule: Schedule | None = attrs.field(default=None, repr=False, eq=False)

    def section(self, key: str) -> Any:
        """The plugin section ``key`` as its declared class built it, or None when absent."""
        return self.sections.get(key)


def _raw_shape(
    cls: type, *, omit: frozenset[str] = frozenset(), replace: Mapping[str, Any] | None = None
) -> type:
    """The document's shape of ``cls``: its fields, names, types and defaults, read from ``cls``.

    cattrs builds this first, so every field's type problem is reported at once with its path;
    ``parse_config`` then turns it into ``cls``. ``omit`` drops the fields the code fills in
    (never read from the document); ``replace`` gives a field its raw form, ``(type, default)``
    (a destination's ``config`` is a mapping until its type's class is known).
    """
    hints = typing.get_type_hints(cls)
    replace = replace or {}
    these: dict[str, Any] = {}
    for field in attrs.fields(cls):
        if field.name in omit:
            continue
        hint, default = replace.get(field.name, (hints[field.name], field.default))
        these[field.name] = attrs.field(type=hint, default=default)
    return attrs.make_class(f"_Raw{cls.__name__}", these, frozen=True)


_RawDestination: Final = _raw_shape(
    DestinationSpec,
    omit=frozenset({"index"}),
    replace={"config": (dict[str, Any], attrs.Factory(dict))},
)
_RawConfig: Final = _raw_shape(
    BackupConfig,
    omit=frozenset({"sections", "schedule"}),
    replace={"destinations": (list[_RawDestination], attrs.Factory(list))},  # type: ignore[valid-type]
)


def _structure_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError("expected true or false")


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError("expected a whole number")


def _structure_str(value: Any, _: type) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a string")
    return str(value)


def _structure_secret(value: Any, _: type) -> Secret:
    if isinstance(value, str):
        return Secret(value)
    if isinstance(value, Mapping):
        raise ValueError("expected a string (for JSON, give the document as a YAML block string)")
    raise ValueError("expected a string")


def make_converter() -> cattrs.Converter:
    """The converter used for the config and for plugins' config classes."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(Secret, _structure_secret)
    return converter


CONVERTER: Final = make_converter()


@functools.cache
def _metrics_from_dict() -> Callable[[Mapping[str, Any], Any], MetricsConfig]:
    """cattrs' function for ``metrics``, generated (compiled) only for a config that has one."""
    return make_dict_structure_fn(MetricsConfig, CONVERTER, _cattrs_forbid_extra_keys=True)


def _structure_metrics(value: Any, _: type) -> MetricsConfig:
    """``metrics: x`` is told as "expected a mapping", not as cattrs' internal AttributeError."""
    if not isinstance(value, Mapping):
        raise ValueError("expected a mapping with textfile and/or listen")
    return _metrics_from_dict()(value, MetricsConfig)


CONVERTER.register_structure_hook(MetricsConfig, _structure_metrics)


def _drop_nulls(value: Any) -> Any:
    """A YAML key with no value means "not set", as it did for the Go release's templates."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _path_text(path: str) -> str:
    text = path.removeprefix("$").removeprefix(".")
    return text or "(top level)"


def _format_exception(exc: BaseException, type_: Any) -> str:
    """cattrs' wording, except that a config class's own validator keeps its message.

    A ValueError raised while the class itself is built (an attrs validator; cattrs passes no
    type then) carries a message a plugin wrote to be shown, naming the field and the problem;
    cattrs' default would reduce it to "invalid value".
    """
    if type_ is None and isinstance(exc, ValueError) and str(exc):
        return str(exc)
    if typing.get_origin(type_) is typing.Literal:
        choices = [str(v) for v in typing.get_args(type_)]
        empty = " (or empty)" if "" in choices else ""
        return "must be one of " + ", ".join(c for c in choices if c) + empty
    return format_exception(exc, type_)


def _cattrs_messages(exc: Exception, path: str) -> list[str]:
    messages = []
    for line in cattrs.transform_error(exc, path=path, format_exception=_format_exception):
        text, _, where = line.rpartition(" @ ")
        if text.startswith("extra fields found"):
            names = text[text.index("(") + 1 : text.rindex(")")]
            for name in sorted(n.strip() for n in names.split(",")):
                messages.append(f"{_path_text(where + '.' + name)}: unknown key")
            continue
        if text.startswith("invalid value for type, expected"):
            text = "invalid value, " + text.removeprefix("invalid value for type, ")
        messages.append(_at_field(_path_text(where), text))
    return messages


def _at_field(path: str, text: str) -> str:
    """``config: key: not a key`` → ``config.key: not a key``, when a validator names its field."""
    field, sep, rest = text.partition(": ")
    if sep and field.isidentifier() and not path.endswith("." + field):
        return f"{path}.{field}: {rest}"
    return f"{path}: {text}"


def _missing_required(obj: Any, path: str) -> list[str]:
    """Fields marked ``required()`` that are present but empty."""
    messages = []
    for field in attrs.fields(type(obj)):
        value = getattr(obj, field.name)
        if field.metadata.get(REQUIRED) and not (
            value.reveal().strip() if isinstance(value, Secret) else str(value).strip()
        ):
            messages.append(f"{path}.{field.name}: required field missing")
    return messages


def structure_destination_config(
    raw: Mapping[str, Any], config_class: type, path: str = "config"
) -> Any:
    """Build one destination's config object, or raise ConfigError listing every problem.

    Every problem means every one: unknown keys, values of the wrong type, and each field
    validator's complaint. The class is therefore built with its validators off, and then
    each validator runs on its own against the built object (cross-field validators see the
    whole object, as they would in ``__init__``), so a misspelled key does not hide a bucket
    name that can never work.
    """
    known = {field.name for field in attrs.fields(config_class)}
    problems = [f"{path}.{key}: unknown key" for key in sorted(map(str, raw)) if key not in known]
    try:
        with attrs.validators.disabled():
            obj: Any = CONVERTER.structure(
                {k: v for k, v in raw.items() if k in known}, config_class
            )
    except cattrs.BaseValidationError as exc:
        raise ConfigError("; ".join([*problems, *_cattrs_messages(exc, "$." + path)])) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError("; ".join([*problems, _at_field(path, str(exc))])) from None
    problems += _validator_problems(obj, path)
    problems += _missing_required(obj, path)
    if problems:
        raise ConfigError("; ".join(problems))
    return obj


def _validator_problems(obj: Any, path: str) -> list[str]:
    """Each field validator's complaint about the built ``obj`` and the config objects in it.

    Nested config classes (a list of services, say) were built with their validators off
    too, so they are walked here, each problem at its own path (``services[1].url``).
    """
    problems = []
    for field in attrs.fields(type(obj)):
        value = getattr(obj, field.name)
        if field.validator is not None:
            try:
                field.validator(obj, field, value)
            except (ValueError, TypeError) as exc:
                problems.append(_at_field(path, str(exc)))
        if attrs.has(type(value)):
            problems += _validator_problems(value, f"{path}.{field.name}")
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                if attrs.has(type(item)):
                    problems += _validator_problems(item, f"{path}.{field.name}[{index}]")
    return problems


_ALERT_FIELDS: Final = {
    "cloud_controller": ("url", "user", "password"),
    "notifications": ("service_url", "cf_org", "cf_space", "client_id", "client_secret"),
}


def _alerts_problems(alerts: AlertsConfig | None) -> list[str]:
    """With a product name, alerts are on: every field they need must be there (not at 3 a.m.)."""
    if alerts is None or not alerts.product_name.strip():
        return []
    problems = []
    for section, names in _ALERT_FIELDS.items():
        values = getattr(alerts.config, section)
        for name in names:
            value = getattr(values, name)
            text = value.reveal() if isinstance(value, Secret) else value
            if not text.strip():
                problems.append(f"alerts.config.{section}.{name}: required field missing")
    return problems


def _shape_problems(data: dict[str, Any]) -> list[str]:
    """``destinations`` of the wrong shape: one clear line each, then left out of the build.

    cattrs would otherwise iterate a string as a list and report every character as an
    ``unknown error``. The entries of the wrong shape are removed from ``data`` so that the
    rest of the document is still checked and every problem is reported at once.
    """
    value = data.get("destinations")
    if value is None:
        return []
    if not isinstance(value, list):
        data["destinations"] = []
        return [f"destinations: expected a list of destinations, not {_kind(value)}"]
    problems = []
    kept = []
    for index, entry in enumerate(value):
        where = f"destinations[{index}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: expected a mapping (type, name, config), not {_kind(entry)}")
        elif "config" in entry and not isinstance(entry["config"], Mapping):
            problems.append(
                f"{where}.config: expected a mapping of keys, not {_kind(entry['config'])}"
            )
        else:
            kept.append(entry)
    data["destinations"] = kept if problems else value
    return problems


def _kind(value: Any) -> str:
    """How a wrong value is described: its YAML kind, never its text (it may be a secret)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _schedule_of(data: Mapping[str, Any]) -> tuple[Schedule | None, str | None]:
    """``cron_schedule`` parsed once, for every command (``backup`` too, not just ``daemon``)."""
    text = data.get("cron_schedule")
    if not isinstance(text, str) or not text.strip():
        return None, None
    try:
        return parse_schedule(text), None
    except ScheduleError as exc:
        return None, str(exc)


def has_parent_segment(path: str) -> bool:
    """True when ``path`` has a ``..`` segment: a base that could climb out of its root."""
    return ".." in path.replace("\\", "/").split("/")


def no_parent_segments(_instance: Any, attribute: Any, value: Any) -> None:
    """attrs validator for plugins' base paths (``bucket_path``, ``path``, ``destination``)."""
    text = value.reveal() if isinstance(value, Secret) else str(value)
    if has_parent_segment(text):
        raise ValueError(f"{attribute.name}: must not contain a '..' segment")


def _path_problems(data: Mapping[str, Any]) -> list[str]:
    """``deployment_name`` goes into every key: it must not climb out of the base."""
    name = data.get("deployment_name")
    if not isinstance(name, str):
        return []
    if has_parent_segment(name):
        return ["deployment_name: must not contain a '..' segment"]
    if name.strip().startswith("/"):
        return ["deployment_name: must not start with '/'"]
    return []


def parse_config(data: Any, registry: PluginLookup) -> BackupConfig:
    """Validate a parsed YAML document; raise ConfigError with every problem found."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the config must be a mapping of keys, not {type(data).__name__}. "
            + DEFAULT_MISSING_PROPERTIES_MESSAGE
        )
    data = _drop_nulls(data)
    message = data.get("missing_properties_message")
    if not isinstance(message, str) or not message.strip():
        message = DEFAULT_MISSING_PROPERTIES_MESSAGE

    problems: list[str] = _shape_problems(data) + _path_problems(data)
    schedule, schedule_problem = _schedule_of(data)
    if schedule_problem:
        problems.append(f"cron_schedule: {schedule_problem}")
    sections: dict[str, Any] = {}
    declared = registry.config_sections()
    for key in sorted(set(data) & set(declared)):
        value = data.pop(key)
        if not isinstance(value, Mapping):
            problems.append(f"{key}: expected a mapping of keys")
            continue
        try:
            sections[key] = structure_destination_config(value, declared[key], key)
        except ConfigError as exc:
            problems.append(str(exc))
    try:
        raw: Any = CONVERTER.structure(data, _RawConfig)
    except cattrs.BaseValidationError as exc:
        problems = _cattrs_messages(exc, "$") + problems
        raise InvalidConfig("; ".join(problems) + ". " + message, schedule_problem) from None

    specs: list[DestinationSpec] = []
    names: dict[str, int] = {}
    for index, dest in enumerate(raw.destinations):
        where = f"destinations[{index}]"
        if dest.name:
            if dest.name in names:
                other = names[dest.name]
                problems.append(
                    f"{where}.name: '{dest.name}' is already used by destinations[{other}]"
                )
            names[dest.name] = index
        if not dest.type.strip():
            problems.append(f"{where}.type: required field missing")
            continue
        try:
            dtype = registry.destination_type(dest.type)
        except ConfigError as exc:
            problems.append(f"{where}.type: {exc}")
            continue
        try:
            obj = structure_destination_config(dest.config, dtype.config_class, f"{where}.config")
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        specs.append(
            DestinationSpec(
                type=dest.type, name=dest.name, config=obj, index=index, retention=dest.retention
            )
        )

    if raw.destinations:
        for key in ("source_folder", "cron_schedule"):
            if not getattr(raw, key).strip():
                problems.append(f"{key}: required field missing")
    problems.extend(_alerts_problems(raw.alerts))
    if raw.add_deployment_name_to_backup_path and not raw.deployment_name.strip():
        problems.append(
            "deployment_name: required field missing (add_deployment_name_to_backup_path is true)"
        )
    if problems:
        raise InvalidConfig("; ".join(problems) + ". " + message, schedule_problem)

    fields = attrs.asdict(raw, recurse=False)
    fields["destinations"] = tuple(specs)
    fields["missing_properties_message"] = message
    fields["sections"] = sections
    fields["schedule"] = schedule
    return BackupConfig(**fields)


#: BOSH renders a few KB; anything this large is not a config someone meant to write.
MAX_CONFIG_BYTES: Final = 1024 * 1024
#: Aliases are legal YAML and harmless when few; expanded, a 1 KB "billion laughs" document
#: becomes gigabytes. The document is checked as a graph (shared nodes counted once per use)
#: before anything is built from it, so a bomb costs microseconds, not memory.
MAX_YAML_ALIASES: Final = 100
MAX_YAML_NODES: Final = 100_000
MAX_YAML_DEPTH: Final = 64
_SYNTAX_QUOTE = re.compile(r"[\[\]{},:?\-]|<[a-z ]+>")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def _clean_yaml_text(text: str) -> str:
    """``text`` without anything quoted from the document (YAML syntax quotes are kept)."""
    kept: list[str] = []
    last = 0
    for match in _QUOTED.finditer(text):
        kept.append(text[last : match.start()])
        if _SYNTAX_QUOTE.fullmatch(match.group(0)[1:-1]):
            kept.append(match.group(0))
        last = match.end()
    rest = text[last:]
    # An unbalanced quote would start quoted text that the pattern could not pair: cut there.
    kept.append(re.split(r"['\"]", rest)[0])
    return " ".join("".join(kept).split())


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's reason without any text quoted from the document.

    An unquoted secret starting with ``!`` or ``*`` is a tag or an alias to the parser, and
    its message quotes it (``could not determine a constructor for the tag '!s3cr3t'``). Only
    quoted YAML syntax (``','``, ``'<block end>'``) is kept; every other quoted part goes.
    """
    parts = [
        _clean_yaml_text(str(text))
        for text in (getattr(exc, "context", None), getattr(exc, "problem", None))
        if text
    ]
    return ": ".join(p for p in parts if p) or "malformed YAML"


def _check_graph(root: yaml.Node) -> None:
    """Refuse a composed document whose expansion would be huge or deep (iteratively)."""
    uses: dict[int, int] = {}
    aliases = 0
    expanded = 0
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"nested more than {MAX_YAML_DEPTH} levels deep")
        seen = uses.get(id(node), 0)
        uses[id(node)] = seen + 1
        if seen and isinstance(node, yaml.CollectionNode):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise ConfigError(f"uses more than {MAX_YAML_ALIASES} YAML aliases")
        expanded += 1
        if expanded > MAX_YAML_NODES:
            raise ConfigError(f"expands to more than {MAX_YAML_NODES} YAML nodes (an alias bomb?)")
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))


_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    """Parse one YAML document with bounds; ConfigError gives line and column, never text."""
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_graph(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"is not valid YAML{where}: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"nested more than {MAX_YAML_DEPTH} levels deep") from None
    finally:
        loader.dispose()


def load_config(path: str | Path, registry: PluginLookup) -> BackupConfig:
    """Read and validate a config file. Every failure is a one-line ConfigError."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB; "
            "a rendered config is a few KB"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    try:
        data = parse_yaml(text)
    except ConfigError as exc:
        raise ConfigError(f"config file {path} {exc}") from None
    config = parse_config(data, registry)
    # From here on every log line this process writes is scrubbed of these values, whoever
    # logs it (a plugin echoing its own key, an SDK's debug line, an error body).
    register_secrets(secret_field_values(config))
    return config
