"""``service-backup check``: a live round trip to every destination before deploying.

For each destination: create the location if needed, write a small probe object under
``.service-backup-check/``, list it, read it back, compare, delete it, and make sure it is gone.
"""

from __future__ import annotations

import os
import uuid

import attrs

from .config import BackupConfig, DestinationSpec
from .destination import DestinationContext
from .errors import BackupError, ObjectNotFound
from .plugins import PluginRegistry
from .secret import scrub, secret_field_values
from .source import Source

CHECK_PREFIX = ".service-backup-check"


@attrs.frozen
class CheckResult:
    destination_name: str
    type: str
    ok: bool
    detail: str


def check_destination(spec: DestinationSpec, registry: PluginRegistry) -> CheckResult:
    dtype = registry.destination_type(spec.type)
    key = f"{CHECK_PREFIX}/{uuid.uuid4()}"
    payload = os.urandom(1024) + b"service-backup check\n"
    step = "connect"
    try:
        with dtype.factory(spec.config, DestinationContext(spec.display_name)) as destination:
            step = "create location"
            destination.ensure_location()
            step = "write"
            info = destination.write(key, Source.from_bytes(payload, f"probe {key}"))
            if info.size != len(payload):
                raise BackupError(f"stored {info.size} bytes, expected {len(payload)}")
            step = "list"
            if key not in {o.key for o in destination.list(CHECK_PREFIX + "/")}:
                raise BackupError("the probe object is missing from the listing")
            step = "read back"
            with destination.open_read(key) as stream:
                if stream.read() != payload:
                    raise BackupError("the probe object read back differs from what was written")
            step = "delete"
            destination.delete(key)
            try:
                destination.stat(key)
            except ObjectNotFound:
                pass
            else:
                raise BackupError("the probe object is still there after delete")
            where = destination.describe(CHECK_PREFIX)
    except Exception as exc:
        text = str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
        text = scrub(" ".join(text.split()), secret_field_values(spec.config))
        return CheckResult(spec.display_name, spec.type, False, f"{step} failed: {text}")
    return CheckResult(
        spec.display_name, spec.type, True, f"write, list, read, delete ok at {where}"
    )


def check_all(config: BackupConfig, registry: PluginRegistry) -> list[CheckResult]:
    return [check_destination(spec, registry) for spec in config.destinations]
