"""paramiko, imported without ``invoke``: about a tenth of every run's start-up.

paramiko's ``config`` module imports ``invoke`` (a task runner, with ``unittest.mock``,
``asyncio`` and a vendored YAML) at import time, only to run ``Match exec`` lines of an
OpenSSH client config; this plugin never reads such a config. Importing it costs ~35 ms of CPU
(paramiko's whole import ~170 ms) on every run that opens an ``scp`` destination. So paramiko
is imported here, first, with ``invoke`` marked missing: paramiko then takes the path it takes
when invoke is not installed (``paramiko.config.invoke`` is None). The mark is taken away
straight after, so anything else that imports ``invoke`` later gets the real package; nothing
changes when ``invoke`` or paramiko was already imported.
"""

from __future__ import annotations

import sys


def import_paramiko() -> None:
    if "paramiko" in sys.modules:
        return
    block = "invoke" not in sys.modules
    if block:
        sys.modules["invoke"] = None  # type: ignore[assignment]  # "not installed"
    try:
        import paramiko  # noqa: F401
    finally:
        if block and "invoke" in sys.modules and sys.modules["invoke"] is None:
            del sys.modules["invoke"]


import_paramiko()
