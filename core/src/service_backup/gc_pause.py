"""The garbage collector during a command's start-up: paused, then what it made is frozen.

Every ``service-backup`` and ``manual-backup`` is a fresh process, and its start-up (imports,
the classes attrs builds, the plugin registry, the config) makes objects that live until the
process ends. With the collector on, each burst of allocations triggers a collection that walks
them again, and the collection at exit walks them once more: about a tenth of a local
``restore``'s instructions. So the CLI runs every command with the collector paused
(``paused``); once the command's start-up is done it calls ``done``: what exists then is frozen
(moved out of every later collection, ``gc.freeze``) and the collector runs again for the
command's own work, so the cycles a long run makes are still collected.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: While a command's start-up runs: whether the collector was enabled before ``paused``.
_resume: list[bool] = []


@contextmanager
def paused(*, whole_process: bool) -> Iterator[None]:
    """The collector off around one command; handed back as it was found.

    ``whole_process``: the process ends when the command returns, so what ``done`` froze is
    left frozen; called in-process (tests), the caller's objects become its own again.
    """
    enabled = gc.isenabled()
    gc.disable()
    depth = len(_resume)
    _resume.append(enabled)
    try:
        yield
    finally:
        del _resume[depth:]  # ``done`` was not reached (an invalid config, an error)
        if not whole_process:
            gc.unfreeze()
        if enabled:
            gc.enable()


def done() -> None:
    """Start-up is over (modules imported, config loaded): freeze its objects, collect again.

    Outside ``paused`` (a command called directly, a second call) it does nothing. A collector
    that was off before ``paused`` stays off.
    """
    if not _resume:
        return
    enabled = _resume.pop()
    gc.freeze()
    if enabled:
        gc.enable()
